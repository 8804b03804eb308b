"""Shared helpers for test_detect.py, test_evaluate.py and test_train.py: a tiny checkpoint,
synthetic faces and the location of the dataset and the bundled photo."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facial_keypoints import landmarks, paths
from facial_keypoints.data import course, fetch
from facial_keypoints.keypoints import checkpoints, nets
from facial_keypoints.paths import DEFAULT_PHOTO

ROOT = Path(__file__).resolve().parents[1]

ASTRONAUT = DEFAULT_PHOTO
#: The Haar box of the face in the bundled photo, measured once (x, y, w, h).
ASTRONAUT_BOX = np.array([176.0, 65.0, 97.0, 97.0])
#: BlazeFace's box of the same face, measured once: the default detector's.
ASTRONAUT_BLAZEFACE_BOX = np.array([177.4, 80.1, 94.8, 94.8])

#: Set-up's data (``make data``): tests that need it are skipped without it, and conftest.py
#: says so loudly at the end of the run.
DATA_READY = (paths.DATA_DIR / course.SPLITS["train"][0]).is_file() and \
    (paths.DATA_DIR / course.SPLITS["test"][0]).is_file()
NO_DATA = "the dataset is not in data/: run `make data` (or `python fetch_data.py`)"
needs_data = pytest.mark.skipif(not DATA_READY, reason=NO_DATA)
W300_READY = (paths.DATA_DIR / fetch.W300_NAME / "keypoints.csv").is_file()
needs_300w = pytest.mark.skipif(not W300_READY, reason="no data/300w_train: set $FKP_DATA_MIRROR "
                                                        "to a mirror that has it, then `make data`")

TINY_INPUT = 64


def make_tiny_checkpoint(path, input_size=TINY_INPUT, seed=0, crop_scale=1.3):
    """A randomly initialised ResNet18Keypoints(width=8) saved as a real checkpoint."""
    torch.manual_seed(seed)
    model = nets.ResNet18Keypoints(width=8)
    meta = checkpoints.checkpoint_meta(arch="resnet18", arch_args={"width": 8},
                                       input_size=input_size,
                                  crop_scale=crop_scale, kp_mean=input_size / 2,
                                  kp_std=input_size / 4, command="tests: tiny random model")
    checkpoints.save_checkpoint(path, model, meta)
    return Path(path)


def random_face(rng, eye_y=50.0, left=30.0, interocular=40.0, spread=30.0):
    """68 random points around a face whose outer eye corners (36, 45) are ``interocular``
    apart horizontally: the NME normaliser is exactly ``interocular``."""
    pts = rng.uniform(-spread, spread, (68, 2)) + [left + interocular / 2, eye_y + 10]
    pts[landmarks.RIGHT_EYE_OUTER] = [left, eye_y]
    pts[landmarks.LEFT_EYE_OUTER] = [left + interocular, eye_y]
    return pts


def iou(a, b):
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


#: The environment for commands the tests start: one thread each, no data mirror.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop(fetch.MIRROR_ENV, None)


def run_py(*args, timeout=300):
    """``python ARGS`` in the repository, as a user runs it; the completed process."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def listing(folder):
    """The files and folders under ``folder``, relative, sorted ([] when it does not exist)."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def save_rgb(path, image):
    """Write an RGB array as an image file with OpenCV (its folder made)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def write_video(path, image, n=8, size=200, fourcc="mp4v"):
    """A clip of ``n`` frames at 10 frames/s: ``image`` resized to ``size`` x ``size``, moved a
    pixel to the right each frame."""
    frame = cv2.cvtColor(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA),
                         cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (size, size))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for k in range(n):
        writer.write(np.roll(frame, k, axis=1))
    writer.release()
