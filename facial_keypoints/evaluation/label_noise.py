"""How noisy are the labels? The error floor that no model can beat on this dataset.

    # the pair NME of consecutive frames, median and per frame
    python -m facial_keypoints.cli.label_noise

Consecutive frames of one clip show nearly the same face; after a similarity alignment (the
head may move a little) their labels still differ. That difference is the labels' noise.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facial_keypoints.data.course import dataset
from facial_keypoints.evaluation.metrics import nme


def consecutive_frame_pairs(filenames):
    """Pairs of file names ``<name>_X0`` / ``<name>_X1``: consecutive frames of one clip."""
    names = set(filenames)
    pairs = []
    for f in sorted(names):
        stem, ext = Path(f).stem, Path(f).suffix
        if stem.endswith("0") and f"{stem[:-1]}1{ext}" in names:
            pairs.append((f, f"{stem[:-1]}1{ext}"))
    return pairs


def label_noise(split="train", data_dir=None):
    """How much the labels of two nearly identical pictures differ: the error floor.

    For each pair of consecutive frames of a clip, frame A's keypoints are aligned onto frame
    B's by a similarity transform (rotation, scale, shift: the head may move a little) and the
    NME between them is measured. If both labels carry independent noise of the same size,
    the per-frame noise is this pair NME divided by sqrt(2). Returns the pair NMEs.
    """
    ds = dataset(split, data_dir=data_dir)
    index = {f: i for i, f in enumerate(ds.filenames)}
    pair_nme = []
    for a, b in consecutive_frame_pairs(ds.filenames):
        pa = ds.keypoints(index[a]).astype(np.float64)
        pb = ds.keypoints(index[b]).astype(np.float64)
        m, _ = cv2.estimateAffinePartial2D(pa, pb, method=cv2.LMEDS)
        if m is None:
            continue
        aligned = pa @ m[:, :2].T + m[:, 2]
        pair_nme.append(nme(aligned[None], pb[None])[0])
    return np.array(pair_nme)
