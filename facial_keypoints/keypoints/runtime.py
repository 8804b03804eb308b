"""Running a keypoint model: onnxruntime (no PyTorch needed) or PyTorch, behind one interface.

A runtime takes a batch of face crops, float32 (N, C, S, S) in [0, 1] (C = 1 grayscale, 3 RGB),
and returns the normalised keypoints of each mark-up head (N, heads, 136) and the model's
confidence (N, heads), both numpy. ``model_runtime(path, backend)`` opens one with the model's
description (``meta``: input size, crop rule, normalisation, mark-up heads, measured offsets
and confidence floor):

* ``backend="onnx"``: an ``.onnx`` file (its description is stored in the file's metadata), or
  a checkpoint's ONNX twin ``<checkpoint>.onnx`` (the shipped model has it beside it; for any
  other checkpoint ``keypoints.export`` writes it first, which needs PyTorch). ``precision``
  picks between a checkpoint's float twin and its INT8 twin ``<checkpoint>.int8.onnx``
  (``keypoints.quantize``; the shipped model has one, which ``fkp-ship`` measured): "auto"
  takes the INT8 twin where it is there and was made from this very checkpoint, "int8"
  requires it, "fp32" never takes it;
* ``backend="torch"``: a checkpoint, run by PyTorch (``pip install 'facial-keypoints[train]'``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from facial_keypoints.files import file_sha256

try:  # the light install has onnxruntime; a training-only environment may not
    import onnxruntime as ort
except ImportError:
    ort = None

BACKENDS = ("onnx", "torch")
PRECISIONS = ("auto", "int8", "fp32")
#: Raised when what is exported changes: older exports are then made again.
EXPORT_FORMAT = 3
TRAIN_EXTRA = "pip install 'facial-keypoints[train]'"
#: onnxruntime's threads unless told otherwise: every core (``OnnxKeypointModel``).
ONNX_THREADS = os.cpu_count() or 1


class ModelLoadError(ValueError):
    """A weights file that cannot be used; the message says what to do."""


class OnnxExportError(ModelLoadError):
    """ONNX export or loading failed; the message says what to do."""


def onnx_path_for(checkpoint) -> Path:
    """Where a checkpoint's ONNX twin is kept: beside it, with the suffix ``.onnx``."""
    return Path(checkpoint).with_suffix(".onnx")


def int8_path_for(checkpoint) -> Path:
    """Where a checkpoint's INT8 twin is kept (``keypoints.quantize``): ``<name>.int8.onnx``."""
    return Path(checkpoint).with_suffix(".int8.onnx")


class OnnxKeypointModel:
    """The network run by onnxruntime: ``predict(batch) -> (keypoints, confidence)``.

    onnxruntime runs on ``threads`` (default: every core, ``ONNX_THREADS``) and its threads do
    not spin while waiting for work: spinning threads steal the cores from the face detector
    (measured on 2 cores: the whole pipeline 43 instead of 31 ms per test frame). Threads that
    do not spin make one caller's pipeline faster on both cores than on one
    (``python -m benchmarks.speedups``); a pipeline shared by concurrent callers (a server)
    may do better on fewer (``python -m benchmarks.benchmark --threads-shared``)."""

    def __init__(self, path, threads=None):
        if ort is None:
            raise OnnxExportError("the ONNX back-end needs onnxruntime: pip install onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or ONNX_THREADS
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise OnnxExportError(f"{path}: onnxruntime cannot load it ({str(e)[:200]}); "
                                  f"delete it and export again (fkp-export)") from None
        self.path = Path(path)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.input_name = self.session.get_inputs()[0].name
        #: "int8" for a quantized twin (``keypoints.quantize``), else "fp32"
        self.precision = self.metadata.get("precision", "fp32")

    @property
    def meta(self) -> dict:
        """The checkpoint's description stored in the file (``keypoints.export``)."""
        try:
            return json.loads(self.metadata["checkpoint_meta"])
        except (KeyError, ValueError):
            raise ModelLoadError(f"{self.path}: an ONNX file without this project's model "
                                 f"description; export it with fkp-export") from None

    def predict(self, batch):
        """Keypoints (N, heads, 136) and confidence (N, heads) for a float32 batch."""
        arr = np.ascontiguousarray(batch, dtype=np.float32)
        coords, conf = self.session.run(None, {self.input_name: arr})
        return coords, conf


def current_export(path, checkpoint, threads=None):
    """The ONNX file at ``path`` opened, when it exists, loads and was exported from this very
    checkpoint by this export format (``keypoints.export`` records both); else None."""
    if not Path(path).is_file():
        return None
    try:
        model = OnnxKeypointModel(path, threads)
    except OnnxExportError:
        return None  # damaged: to be exported again
    current = model.metadata.get("export_format") == str(EXPORT_FORMAT) and \
        model.metadata.get("checkpoint_sha256") == file_sha256(checkpoint)
    return model if current else None


#: What must run before PyTorch first reads a checkpoint (``before_torch``).
_BEFORE_TORCH = []


def before_torch(setup):
    """Run ``setup()`` once, just before a checkpoint is first read with PyTorch (to export
    it, or on the torch back-end): e.g. importing a module that registers an architecture
    defined outside the package, as the course's ``detect.py`` does for its ``Net``, so that
    a photo through an ONNX model never waits for PyTorch to load."""
    _BEFORE_TORCH.append(setup)


def _torch_needed():
    while _BEFORE_TORCH:
        _BEFORE_TORCH.pop(0)()


def _onnx_for_checkpoint(checkpoint, threads=None) -> OnnxKeypointModel:
    """The checkpoint's ONNX twin when it is current (the shipped model's is), else exported
    now (``keypoints.export``, which needs PyTorch)."""
    model = current_export(onnx_path_for(checkpoint), checkpoint, threads)
    if model is not None:
        return model
    _torch_needed()
    try:
        from facial_keypoints.keypoints.export import onnx_model_for  # optional: needs torch
    except ImportError:
        raise ModelLoadError(f"{checkpoint}: a checkpoint without its ONNX twin; exporting it "
                             f"needs PyTorch ({TRAIN_EXTRA}), or pass an .onnx file") from None
    return onnx_model_for(checkpoint, threads)


def _int8_for_checkpoint(checkpoint, threads=None, required=False):
    """The checkpoint's INT8 twin when it is there and was made from this very checkpoint;
    else None, or (``required``) an error saying how to make one."""
    model = current_export(int8_path_for(checkpoint), checkpoint, threads)
    if model is None and required:
        raise ModelLoadError(f"{checkpoint}: no INT8 twin {int8_path_for(checkpoint).name} made "
                             f"from this checkpoint; fkp-ship makes one (or use --precision "
                             f"fp32)")
    return model


class TorchKeypointModel:
    """A checkpoint run by PyTorch, with the same ``predict`` as ``OnnxKeypointModel``."""

    def __init__(self, path, device="cpu"):
        _torch_needed()
        try:
            import torch

            from facial_keypoints.keypoints.checkpoints import load_model
        except ImportError:
            raise ModelLoadError(f"the torch back-end needs PyTorch: {TRAIN_EXTRA}, or use "
                                 f"the onnx back-end") from None
        self.torch = torch
        self.model, self.meta = load_model(path)
        self.device, self.precision = device, "fp32"
        self.model.to(device)

    def predict(self, batch):
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            if hasattr(self.model, "predict"):
                coords, conf = self.model.predict(x)
            else:  # the course Net: one head, no confidence
                coords = self.model(x)[:, None]
                conf = torch.full(coords.shape[:2], float("nan"))
        return coords.float().cpu().numpy(), conf.float().cpu().numpy()


def model_runtime(model, backend="onnx", device="cpu", threads=None, precision="auto"):
    """``(runtime, meta)`` for a model file: a checkpoint (``.pt``) or an ONNX export.
    ``precision`` (onnx back-end, checkpoints): see the module's description; an ``.onnx``
    file runs as it is."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    path = Path(model)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such weights file. Pass --model with the path of a "
                             f"checkpoint or of its .onnx export.")
    if backend == "torch":
        if precision == "int8":
            raise ValueError("an INT8 twin runs on the onnx back-end only")
        if path.suffix.lower() == ".onnx":
            raise ModelLoadError(f"{path}: an ONNX file runs on the onnx back-end only")
        runtime = TorchKeypointModel(path, device)
        return runtime, runtime.meta
    if str(device) != "cpu":
        raise ValueError("the ONNX back-end runs on the CPU only")
    if path.suffix.lower() == ".onnx":
        runtime = OnnxKeypointModel(path, threads)
    else:
        runtime = None if precision == "fp32" else \
            _int8_for_checkpoint(path, threads, required=precision == "int8")
        runtime = runtime or _onnx_for_checkpoint(path, threads)
    return runtime, runtime.meta
