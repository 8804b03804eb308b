"""OpenCV's Haar cascade face detector (the course's), with merged overlapping boxes.
"""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from facial_keypoints.detection.base import Detections, box_overlaps, load_calibration


def cascade_path(name="haarcascade_frontalface_default.xml") -> str:
    """The path of one of the Haar cascades that opencv-python ships."""
    path = Path(cv2.data.haarcascades) / name
    if not path.is_file():
        raise FileNotFoundError(f"Haar cascade {name!r} is not in OpenCV's "
                                f"{cv2.data.haarcascades}; check the opencv-python install")
    return str(path)


def _load_cascade(name):
    cascade = cv2.CascadeClassifier(cascade_path(name))
    if cascade.empty():
        raise RuntimeError(f"OpenCV could not load the cascade {name}")
    return cascade


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
        # OpenCV's cascades are not safe to share between threads (wrong boxes, assertion
        # errors): one detection at a time, so that threads sharing a detector get what each
        # would alone
        self.lock = threading.Lock()

    def __call__(self, image) -> Detections:
        """Face boxes (x, y, w, h) in the pixels of ``image`` (RGB or gray array), with the
        cascade's level weights as scores. Safe to call from several threads."""
        with self.lock:
            return self._detect(image)

    def _detect(self, image) -> Detections:
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
