"""Face detectors: a detector is a callable ``image -> Detections`` (boxes, scores and, where
it has them, a few face points), with a ``name`` and a ``calibration``.

The calibration says where the face that the keypoint model expects sits relative to the
detector's box: the centre of the keypoints' box and its larger side, in units of the box's
width, in the face's own (upright) frame. Each detector's is measured on training faces by
``python evaluate.py --calibrate --detector NAME`` (``calibrate``) and stored in
``detector_architectures/calibration.json``; ``crops_for`` turns detections into the squares
the pipeline cuts, turned upright by the roll that the detector's eye points show.

* ``HaarFaceDetector``: OpenCV's Haar cascades (notebook 3), at a working size, with border
  padding, overlapping boxes merged (``merge_boxes``); no points.
* ``GivenBoxes``: boxes that the user gives (``detect.py --boxes``), read like Haar's.
* ``blazeface.BlazeFaceDetector``: MediaPipe's BlazeFace, the default.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data_load import upright_square
from utils import atomic_write_json

ROOT = Path(__file__).resolve().parent
CASCADE_DIR = ROOT / "detector_architectures"
#: Each detector's calibration, as ``python evaluate.py --calibrate --detector NAME`` measured
#: it (the medians over 600 course training frames and 600 300-W training crops; also their
#: 10th and 90th percentiles).
CALIBRATION_FILE = CASCADE_DIR / "calibration.json"

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
    """A detector's calibration from ``detector_architectures/calibration.json`` (``default``
    when it holds none)."""
    if CALIBRATION_FILE.is_file():
        return json.loads(CALIBRATION_FILE.read_text()).get(name) or default
    return default


def save_calibration(name, calibration):
    """Store one detector's calibration in ``calibration.json`` (the others are kept)."""
    stored = json.loads(CALIBRATION_FILE.read_text()) if CALIBRATION_FILE.is_file() else {}
    stored[name] = calibration
    atomic_write_json(CALIBRATION_FILE, dict(sorted(stored.items())))


def cascade_path(name="haarcascade_frontalface_default.xml") -> str:
    """The path of a Haar cascade: ``detector_architectures/`` first, then OpenCV's own copy."""
    for folder in (CASCADE_DIR, Path(cv2.data.haarcascades)):
        if (folder / name).is_file():
            return str(folder / name)
    raise FileNotFoundError(f"Haar cascade {name!r} is neither in {CASCADE_DIR} nor in OpenCV's "
                            f"{cv2.data.haarcascades}; check the opencv-python install")


def _load_cascade(name):
    cascade = cv2.CascadeClassifier(cascade_path(name))
    if cascade.empty():
        raise RuntimeError(f"OpenCV could not load the cascade {name}")
    return cascade


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


def merge_boxes(boxes, scores, iou=0.3, containment=0.7):
    """Greedy non-maximum suppression: keep the best-scored of overlapping boxes, where boxes
    overlap when their IoU reaches ``iou`` or one lies mostly (``containment``) in the other.
    Returns the boxes kept and their scores, best first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ious, inside = box_overlaps(boxes, boxes)
    suppressed = np.zeros(len(boxes), bool)
    kept = []
    for i in order:
        if not suppressed[i]:
            kept.append(i)
            suppressed |= (ious[i] >= iou) | (inside[i] >= containment)
    return boxes[kept].reshape(-1, 4), np.asarray(scores, dtype=np.float64)[kept]


class HaarFaceDetector:
    """Haar cascade face detection on images of any size.

    The image is brought to a working size (small images are upscaled so that small faces
    reach the cascade's 24-px minimum, huge ones downscaled for speed) and padded at the border
    so that a face filling the whole frame is still found. With ``profile=True`` the profile
    cascade runs on the image and its mirror too; overlapping boxes are merged.
    """

    name = "haar"

    def __init__(self, frontal=("haarcascade_frontalface_default.xml",), profile=False,
                 scale_factor=1.1, min_neighbors=6, work_min=240, work_max=1280,
                 pad=0.1, min_face=0.04):
        self.calibration = load_calibration(self.name)
        self.frontal = [_load_cascade(n) for n in frontal]
        self.profile = _load_cascade("haarcascade_profileface.xml") if profile else None
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.work_min, self.work_max, self.pad, self.min_face = work_min, work_max, pad, min_face

    def __call__(self, image) -> Detections:
        """Face boxes (x, y, w, h) in the pixels of ``image`` (RGB or gray array), with the
        cascade's level weights as scores."""
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        scale = 1.0
        if max(h, w) > self.work_max:
            scale = self.work_max / max(h, w)
        elif max(h, w) < self.work_min:
            scale = self.work_min / max(h, w)
        if scale != 1.0:
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        p = int(round(self.pad * min(gray.shape)))
        padded = cv2.copyMakeBorder(gray, p, p, p, p, cv2.BORDER_REPLICATE)
        min_size = max(24, int(self.min_face * min(gray.shape)))
        found, scores = [], []
        for cascade in self.frontal:
            found, scores = self._run(cascade, padded, min_size, found, scores)
        if self.profile is not None:
            found, scores = self._run(self.profile, padded, min_size, found, scores)
            mirrored = cv2.flip(padded, 1)
            mw = mirrored.shape[1]
            more, more_scores = self._run(self.profile, mirrored, min_size, [], [])
            found += [(mw - x - bw, y, bw, bh) for x, y, bw, bh in more]
            scores += more_scores
        if not found:
            return Detections.empty()
        boxes, scores = merge_boxes(np.array(found, dtype=np.float64), scores)
        boxes[:, :2] -= p
        boxes /= scale
        return Detections(boxes, scores)

    def _run(self, cascade, gray, min_size, found, scores):
        rects, _, weights = cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size), outputRejectLevels=True)
        found = list(found) + [tuple(r) for r in np.asarray(rects).reshape(-1, 4)]
        scores = list(scores) + [float(s) for s in np.asarray(weights).reshape(-1)]
        return found, scores


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
                         f"{CALIBRATION_FILE}: measure it with `python evaluate.py --calibrate "
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
