"""Export a keypoint checkpoint to ONNX and run it with onnxruntime.

    python export.py                                  # saved_models/keypoints.onnx
    python export.py --model runs/x/best.pt --out x.onnx

``detect.py --backend onnx`` uses ``<checkpoint>.onnx`` beside the checkpoint (or in the
temporary folder when the checkpoint's folder is read-only) and exports it first when it is
missing, damaged or was exported from another version of the checkpoint (the ONNX file records
the checkpoint's SHA-256 and the export format). The ONNX graph is the network alone: input
(N, C, S, S) grayscale (C = 1) or RGB (C = 3) in [0, 1], outputs the normalised keypoints of
each mark-up head (N, heads, 136) and the model's confidence (N, heads); cropping,
normalisation and the mapping back to image pixels stay in ``pipeline.py`` for both back-ends.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from models import DEFAULT_MODEL, ModelLoadError, load_model
from utils import atomic_path, file_sha256

OPSET = 18
#: Raised when what is exported changes: older exports are then made again.
EXPORT_FORMAT = 2


class OnnxExportError(ModelLoadError):
    """ONNX export or loading failed; the message says what to do."""


def onnx_path_for(checkpoint) -> Path:
    return Path(checkpoint).with_suffix(".onnx")


class Predict(torch.nn.Module):
    """What is exported: the model's ``predict`` — keypoints (N, heads, 136) and a confidence
    (N, heads) — for every model (the course ``Net``: one head, NaN confidence)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        if hasattr(self.model, "predict"):
            return self.model.predict(x)
        coords = self.model(x)[:, None]
        return coords, coords[..., 0] * float("nan")


def export_onnx(checkpoint=DEFAULT_MODEL, dest=None) -> Path:
    """Write the checkpoint's network as ONNX (atomically: temp file + rename); returns the path.

    The batch dimension is dynamic. The checkpoint's SHA-256 and description are stored in the
    ONNX metadata, so a stale export is recognised.
    """
    try:
        import onnx
    except ImportError:
        raise OnnxExportError("exporting to ONNX needs the onnx and onnxscript packages: "
                              "pip install -r requirements.txt") from None
    model, meta = load_model(checkpoint)
    dest = Path(dest) if dest else onnx_path_for(checkpoint)
    size = meta["input_size"]
    channels = 3 if meta["normalization"].get("image", "").startswith("rgb") else 1
    example = torch.zeros(2, channels, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(Predict(model), (example,), dynamo=True, opset_version=OPSET,
                                    input_names=["image"], output_names=["keypoints", "confidence"],
                                    dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                                    verbose=False)
    proto = program.model_proto
    description = {k: v for k, v in meta.items() if k not in ("train_config",)}
    for key, value in {"checkpoint_sha256": file_sha256(checkpoint),
                       "export_format": str(EXPORT_FORMAT),
                       "checkpoint_meta": json.dumps(description, default=str)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(dest) as tmp:
        onnx.save(proto, tmp)
    return dest


def onnx_metadata(path) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


class OnnxKeypointModel:
    """The network run by onnxruntime, called like the torch model (``predict``, or as a
    function for the keypoints alone).

    onnxruntime runs on ``threads`` (default: half the cores, at least one) and its threads do
    not spin while waiting for work. Measured on 2 cores: spinning threads make the keypoint
    step alone faster (2.5-2.8 ms instead of about 4 ms per face) but steal the cores from the
    Haar detector and torch, and the whole pipeline slower (43 ms instead of 31 ms per test
    frame); one thread beat two. ``detect.py --backend
    onnx`` also puts torch on one thread (torch then only cuts and scales the face crops)."""

    def __init__(self, path, threads=None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise OnnxExportError("the ONNX back-end needs onnxruntime: "
                                  "pip install -r requirements.txt") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or max(1, (os.cpu_count() or 2) // 2)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise OnnxExportError(f"{path}: onnxruntime cannot load it ({str(e)[:200]}); "
                                  f"delete it and export again with `python export.py`") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, x):
        """Keypoints (N, heads, 136) and confidence (N, heads), as ``models.predict``."""
        arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
        coords, conf = self.session.run(None, {self.input_name: arr})
        return torch.from_numpy(coords), torch.from_numpy(conf)

    def __call__(self, x):
        """The keypoints alone, shaped as the torch model's ``forward`` gives them."""
        coords = self.predict(x)[0]
        return coords[:, 0] if coords.shape[1] == 1 else coords

    def eval(self):
        return self

    def to(self, device):
        if str(device) != "cpu":
            raise ValueError("the ONNX back-end runs on the CPU only")
        return self


def onnx_model_for(checkpoint, threads=None) -> OnnxKeypointModel:
    """The onnxruntime model for a checkpoint: ``<checkpoint>.onnx``, exported first when it is
    missing or stale (exported from another checkpoint)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ModelLoadError(f"{checkpoint}: no such weights file")
    sha = file_sha256(checkpoint)
    # beside the checkpoint, or in the temporary folder when that one is read-only
    candidates = [onnx_path_for(checkpoint),
                  Path(tempfile.gettempdir()) / f"facial-keypoints-{sha[:16]}.onnx"]
    for path in candidates:
        if path.is_file():
            try:
                model = OnnxKeypointModel(path, threads)
            except OnnxExportError:
                continue  # damaged: export again below
            if model.metadata.get("checkpoint_sha256") == sha and \
                    model.metadata.get("export_format") == str(EXPORT_FORMAT):
                return model
    for path in candidates:
        try:
            export_onnx(checkpoint, path)
        except PermissionError:
            continue
        return OnnxKeypointModel(path, threads)
    raise OnnxExportError(f"cannot write {candidates[0]} nor {candidates[1]}: export it "
                          f"yourself with `python export.py --model {checkpoint} --out FILE`")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint written by train.py")
    p.add_argument("--out", default=None, help="ONNX file (default: beside the checkpoint)")
    args = p.parse_args(argv)
    try:
        dest = export_onnx(args.model, args.out)
    except (ModelLoadError, OnnxExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
