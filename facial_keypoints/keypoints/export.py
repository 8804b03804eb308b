"""Export a keypoint checkpoint to ONNX (needs PyTorch), so that onnxruntime can run it.

    fkp-export                          # the shipped model -> keypoints/shipped/keypoints.onnx
    fkp-export --model runs/x/best.pt --out x.onnx

The onnx back-end (``keypoints.runtime``) uses ``<checkpoint>.onnx`` beside the checkpoint (or
in the temporary folder when the checkpoint's folder is read-only) and exports it first when it is
missing, damaged or was exported from another version of the checkpoint (the ONNX file records
the checkpoint's SHA-256 and the export format). The ONNX graph is the network alone: input
(N, C, S, S) grayscale (C = 1) or RGB (C = 3) in [0, 1], outputs the normalised keypoints of
each mark-up head (N, heads, 136) and the model's confidence (N, heads); cropping,
normalisation and the mapping back to image pixels stay in ``keypoints.pipeline`` for both
back-ends.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import torch

from facial_keypoints.files import atomic_path, file_sha256
from facial_keypoints.keypoints.checkpoints import load_model
from facial_keypoints.keypoints.runtime import (
    EXPORT_FORMAT,
    TRAIN_EXTRA,
    ModelLoadError,
    OnnxExportError,
    OnnxKeypointModel,
    current_export,
    onnx_path_for,
)
from facial_keypoints.paths import DEFAULT_MODEL

OPSET = 18


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
                              + TRAIN_EXTRA) from None
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
    description = dict(meta)
    for key, value in {"checkpoint_sha256": file_sha256(checkpoint),
                       "export_format": str(EXPORT_FORMAT),
                       "checkpoint_meta": json.dumps(description, default=str)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(dest) as tmp:
        onnx.save(proto, tmp)
    return dest


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
        model = current_export(path, checkpoint, threads)
        if model is not None:
            return model
    for path in candidates:
        try:
            export_onnx(checkpoint, path)
        except PermissionError:
            continue
        return OnnxKeypointModel(path, threads)
    raise OnnxExportError(f"cannot write {candidates[0]} nor {candidates[1]}: export it "
                          f"yourself with `fkp-export --model {checkpoint} --out FILE`")
