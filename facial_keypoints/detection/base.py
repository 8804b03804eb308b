"""What every face detector shares: ``Detections`` (boxes, scores, optional points), the
per-detector calibration (how a detector's box maps to the model's face crop, measured by
``calibrate`` and stored in ``calibration.json`` beside this file), given boxes, box overlaps.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from facial_keypoints.files import atomic_write_json
from facial_keypoints.geometry import upright_square
from facial_keypoints.paths import CALIBRATION_FILE


class DetectorWeightsError(ValueError):
    """A detector's model files are missing or damaged (one-line message)."""


@dataclass
class Detections:
    """Faces found in one image, in its pixels: ``boxes`` (N, 4) as (x, y, w, h), ``scores``
    (N,) (NaN where a detector has none) and ``points`` (N, K, 2), the detector's own face
    points, or ``None``. Where there are points, the first two are the subject's right eye
    (on the image's left) and left eye."""
    boxes: np.ndarray
    scores: np.ndarray
    points: np.ndarray | None = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if self.points is not None:
            points = np.asarray(self.points, dtype=np.float64)
            self.points = points.reshape(len(self.boxes), -1, 2) if points.size else \
                points.reshape(len(self.boxes), points.shape[-2] if points.ndim == 3 else 0, 2)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index):
        """The detections at ``index`` (a slice, a list or a boolean mask)."""
        index = np.arange(len(self))[index] if isinstance(index, slice) else index
        return Detections(self.boxes[index], self.scores[index],
                          None if self.points is None else self.points[index])

    @classmethod
    def empty(cls, points=0):
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, points, 2)) if points else None)

    def rolls(self) -> np.ndarray:
        """Each face's roll in degrees from its eye points (0 where there are none)."""
        if self.points is None or self.points.shape[1] < 2:
            return np.zeros(len(self))
        d = self.points[:, 1] - self.points[:, 0]
        return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


def load_calibration(name, default=None):
    """A detector's calibration from ``calibration.json`` beside this file (``default``
    when it holds none)."""
    if CALIBRATION_FILE.is_file():
        return json.loads(CALIBRATION_FILE.read_text()).get(name) or default
    return default


def save_calibration(name, calibration):
    """Store one detector's calibration in ``calibration.json`` (the others are kept)."""
    stored = json.loads(CALIBRATION_FILE.read_text()) if CALIBRATION_FILE.is_file() else {}
    stored[name] = calibration
    atomic_write_json(CALIBRATION_FILE, dict(sorted(stored.items())))


def box_overlaps(a, b):
    """IoU and intersection-over-the-smaller-box of every pair of (x, y, w, h) boxes in ``a``
    (N, 4) and ``b`` (M, 4): two (N, M) arrays (IoU NaN where both boxes have no area).

    Plain numpy: ``torchvision.ops.box_iou`` gives the same IoU, but for the few boxes of one
    image its tensor conversions cost more than the arithmetic (about a tenth of BlazeFace's
    time on a group photo, whose detections go through three merges)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None]
    lo = np.maximum(a[..., :2], b[..., :2])
    hi = np.minimum(a[..., :2] + a[..., 2:], b[..., :2] + b[..., 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_a, area_b = np.prod(a[..., 2:], axis=-1), np.prod(b[..., 2:], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (area_a + area_b - inter)
    return iou, inter / np.maximum(np.minimum(area_a, area_b), 1e-9)


class GivenBoxes:
    """The face boxes a user gives (``detect.py --boxes``), as a detector.

    The rule: a box is read as OpenCV's Haar frontal-face detector draws it (about from the
    eyebrows' top to the chin, cheek to cheek, for an upright face), so the Haar calibration
    places the crop; the pipeline's refinement then re-crops around the keypoints it found."""

    name = "given boxes"

    def __init__(self, boxes):
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.calibration = load_calibration("haar")

    def __call__(self, image) -> Detections:
        return Detections(self.boxes, np.full(len(self.boxes), np.nan))


def crop_for_box(box, crop_scale, calibration, roll=0.0):
    """The square (cx, cy, side, angle) that the model expects for a face box (x, y, w, h), by
    a detector's ``calibration``, turned by the face's ``roll`` (degrees): the calibration's
    offsets are in the face's own frame."""
    c = calibration
    x, y, w, h = (float(v) for v in box)
    a = np.radians(roll)
    dx, dy = c["dx"] * w, c["dy"] * h
    cx = x + w / 2 + np.cos(a) * dx - np.sin(a) * dy
    cy = y + h / 2 + np.sin(a) * dx + np.cos(a) * dy
    return np.array([cx, cy, crop_scale * c["size"] * w, roll])


def crops_for(detections, detector, crop_scale) -> np.ndarray:
    """The squares (N, 4) as (cx, cy, side, angle) that the pipeline cuts for ``detections``
    of ``detector`` (its calibration; the roll of its eye points)."""
    if len(detections) == 0:
        return np.zeros((0, 4))
    if detector.calibration is None:
        raise ValueError(f"the {detector.name} detector has no calibration in "
                         f"{CALIBRATION_FILE}: measure it with `fkp-evaluate --calibrate "
                         f"--detector {detector.name}`")
    rolls = detections.rolls()
    return np.array([crop_for_box(b, crop_scale, detector.calibration, r)
                     for b, r in zip(detections.boxes, rolls)]).reshape(-1, 4)


def box_for_keypoints(keypoints, calibration, crop_scale=1.0):
    """The box (x, y, w, h) a detector of this ``calibration`` would draw around a face with
    these keypoints (``crop_for_box`` backwards, upright): for faces found by tracking."""
    cx, cy, side, angle = upright_square(keypoints, 1.0)
    w = side / calibration["size"]
    a = np.radians(angle)
    dx, dy = calibration["dx"] * w, calibration["dy"] * w
    bx = cx - (np.cos(a) * dx - np.sin(a) * dy)
    by = cy - (np.sin(a) * dx + np.cos(a) * dy)
    return np.array([bx - w / 2, by - w / 2, w, w])


def calibrate(detector, samples):
    """Measure a detector's calibration on labelled faces: the medians of where each face's
    upright keypoint square sits relative to the detector box that found it (``crop_for_box``'s
    ``dx``, ``dy``, ``size``, in the face's own frame), with their 10th and 90th percentiles.

    ``samples``: (image, keypoints) pairs. A face counts when the box nearest to its keypoints'
    centre lies within half the face's size of it."""
    rows, total = [], 0
    for image, keypoints in samples:
        total += 1
        kx, ky, ksize, roll = upright_square(keypoints, 1.0)
        kc = np.array([kx, ky])
        boxes = detector(image).boxes
        if len(boxes) == 0:
            continue
        centres = boxes[:, :2] + boxes[:, 2:] / 2
        j = int(np.argmin(np.linalg.norm(centres - kc, axis=1)))
        x, y, w, h = boxes[j]
        if np.linalg.norm(centres[j] - kc) > 0.5 * ksize:
            continue
        a = np.radians(roll)
        d = kc - centres[j]
        along, across = np.cos(a) * d[0] + np.sin(a) * d[1], -np.sin(a) * d[0] + np.cos(a) * d[1]
        rows.append((along / w, across / h, ksize / w))
    rows = np.array(rows)
    med = np.median(rows, axis=0)
    spread = np.percentile(rows, [10, 90], axis=0)
    return {"dx": round(float(med[0]), 4), "dy": round(float(med[1]), 4),
            "size": round(float(med[2]), 4), "faces": len(rows), "of": total,
            "p10": spread[0].round(4).tolist(), "p90": spread[1].round(4).tolist()}
