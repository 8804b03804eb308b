"""Self-describing checkpoints: the weights with everything needed to use them
(architecture and arguments, input size, face-crop rule, image and keypoint normalisation, the
command that trained it, its measured metrics). Needs PyTorch (``pip install
'facial-keypoints[train]'``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from facial_keypoints.files import atomic_path, first_line
from facial_keypoints.keypoints.nets import build_model
from facial_keypoints.keypoints.runtime import ModelLoadError
from facial_keypoints.landmarks import N_KEYPOINTS

CHECKPOINT_FORMAT = 1


def checkpoint_meta(arch, arch_args, input_size, crop_scale, kp_mean, kp_std, command=None,
                    metrics=None, color=False, **extra):
    """The description stored with the weights (``color``: RGB input, else grayscale)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "arch_args": dict(arch_args),
        "input_size": int(input_size),
        "crop_scale": float(crop_scale),
        "normalization": {"image": "rgb, pixel / 255" if color else "grayscale, pixel / 255",
                          "kp_mean": float(kp_mean), "kp_std": float(kp_std)},
        "keypoints": N_KEYPOINTS,
        "command": command or " ".join(sys.argv),
        "metrics": dict(metrics or {}),
        **extra,
    }


def save_checkpoint(path, model, meta):
    """Save the weights and their description atomically."""
    atomic_torch_save({**meta, "state_dict": model.state_dict()}, path)


def read_checkpoint(path) -> dict:
    """Read a checkpoint file and check it; raise ``ModelLoadError`` with advice otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such weights file. Pass --model with the path of a "
                             f"checkpoint or of its .onnx export.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged file
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                             f"{first_line(e)}). The file may be damaged or "
                             f"incomplete: copy or train it again.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "arch" not in ckpt:
        raise ModelLoadError(f"{path}: a bare state dict or an unknown format, with no "
                             f"description of its architecture. Only checkpoints written by "
                             f"this project's fkp-train (format {CHECKPOINT_FORMAT}) can be "
                             f"loaded; to use bare weights, load them into the model they were "
                             f"trained as and save it with facial_keypoints.keypoints.checkpoints."
                             f"save_checkpoint(path, model, checkpoint_meta(...)).")
    if not isinstance(ckpt.get("format", 0), int) or ckpt.get("format", 0) > CHECKPOINT_FORMAT:
        raise ModelLoadError(f"{path}: checkpoint format {ckpt['format']!r} is newer than this "
                             f"code reads ({CHECKPOINT_FORMAT}); update the project.")
    norm = ckpt.get("normalization")
    try:
        usable = (int(ckpt["input_size"]) > 0 and isinstance(norm, dict)
                  and float(norm["kp_std"]) > 0 and float(norm["kp_mean"]) == norm["kp_mean"])
    except (KeyError, TypeError, ValueError):
        usable = False
    if not usable:
        raise ModelLoadError(f"{path}: an older or damaged checkpoint format: its description "
                             f"lacks a valid input size or keypoint normalisation, so its "
                             f"predictions could not be mapped back onto an image. Save it "
                             f"again with facial_keypoints.keypoints.checkpoints.save_checkpoint "
                             f"or retrain it.")
    return ckpt


def load_model(path, expect_arch=None):
    """Build the model described by a checkpoint and load its weights.

    Returns ``(model in eval mode, meta)``; ``meta`` is the checkpoint without the weights.
    With ``expect_arch``, a checkpoint of another architecture is an error.
    """
    ckpt = read_checkpoint(path)
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    if expect_arch is not None and meta["arch"] != expect_arch:
        raise ModelLoadError(f"{path}: holds a {meta['arch']!r} model, not {expect_arch!r}")
    try:
        model = build_model(meta["arch"], **meta.get("arch_args", {}))
    except (ValueError, TypeError) as e:
        raise ModelLoadError(f"{path}: {e}") from None
    load_weights(model, ckpt["state_dict"], path)
    model.eval()
    return model, meta


def load_weights(model, state_dict, source="weights"):
    """``load_state_dict`` with a clear message when the weights belong to another model."""
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as e:  # wrong shapes, not a dict
        first = str(e).splitlines()
        detail = "; ".join(line.strip() for line in first[1:3] or first[:1])
        raise ModelLoadError(f"{source}: these weights do not fit a {type(model).__name__} "
                             f"with these arguments (another architecture or input size?): "
                             f"{detail[:300]}") from None


def atomic_torch_save(obj, path):
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
