"""Face detectors: a detector is a callable ``image -> boxes (N, 4)`` as (x, y, w, h).

Each detector carries its own *calibration*: where the face the keypoint model expects sits
relative to the detector's box (``crop_for_box``), measured on training faces by
``python evaluate.py --calibrate`` (``calibrate``).

* ``HaarFaceDetector``: OpenCV's Haar cascades (notebook 3), at a working size, with border
  padding, overlapping boxes merged (``merge_boxes``).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import box_convert, box_iou

from data_load import keypoint_box

ROOT = Path(__file__).resolve().parent
CASCADE_DIR = ROOT / "detector_architectures"

#: How a Haar ``frontalface`` box (x, y, w, h) relates to the face as the model sees it: the
#: centre of the keypoints' bounding box is at (x + w/2 + dx*w, y + h/2 + dy*h) and its larger
#: side is ``size * w``. Medians measured on the training split by
#: ``python evaluate.py --calibrate --subset 600`` with the default HaarFaceDetector (594 of 600
#: training faces found and matched; 10th-90th percentiles: dx -0.12..0.13, dy 0.12..0.21,
#: size 0.80..1.01). Training jitters its crops to cover part of that spread
#: (data_load.face_transform) and the pipeline's refinement re-crops around the first
#: prediction.
FACE_BOX_TO_CROP = {"dx": 0.0071, "dy": 0.1633, "size": 0.8962}


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
    (N, 4) and ``b`` (M, 4): two (N, M) arrays (``torchvision.ops.box_iou``)."""
    a = box_convert(torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(-1, 4)), "xywh", "xyxy")
    b = box_convert(torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(-1, 4)), "xywh", "xyxy")
    iou = box_iou(a, b)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    inter = iou * (area_a + area_b) / (1 + iou)        # from iou = inter / (a + b - inter)
    smaller = torch.minimum(area_a, area_b).clamp_min(1e-9)
    return iou.numpy(), (inter / smaller).numpy()


def merge_boxes(boxes, scores, iou=0.3, containment=0.7):
    """Greedy non-maximum suppression: keep the best-scored of overlapping boxes, where boxes
    overlap when their IoU reaches ``iou`` or one lies mostly (``containment``) in the other."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ious, inside = box_overlaps(boxes, boxes)
    suppressed = np.zeros(len(boxes), bool)
    kept = []
    for i in order:
        if not suppressed[i]:
            kept.append(i)
            suppressed |= (ious[i] >= iou) | (inside[i] >= containment)
    return boxes[kept].reshape(-1, 4)


class HaarFaceDetector:
    """Haar cascade face detection on images of any size.

    The image is brought to a working size (small images are upscaled so that small faces
    reach the cascade's 24-px minimum, huge ones downscaled for speed) and padded at the border
    so that a face filling the whole frame is still found. With ``profile=True`` the profile
    cascade runs on the image and its mirror too; overlapping boxes are merged.
    """

    name = "haar"
    calibration = FACE_BOX_TO_CROP

    def __init__(self, frontal=("haarcascade_frontalface_default.xml",), profile=False,
                 scale_factor=1.1, min_neighbors=6, work_min=240, work_max=1280,
                 pad=0.1, min_face=0.04):
        self.frontal = [_load_cascade(n) for n in frontal]
        self.profile = _load_cascade("haarcascade_profileface.xml") if profile else None
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.work_min, self.work_max, self.pad, self.min_face = work_min, work_max, pad, min_face

    def __call__(self, image) -> np.ndarray:
        """Face boxes (N, 4) as (x, y, w, h) in the pixels of ``image`` (RGB or gray array)."""
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
            return np.zeros((0, 4))
        boxes = merge_boxes(np.array(found, dtype=np.float64), scores)
        boxes[:, :2] -= p
        boxes /= scale
        return boxes

    def _run(self, cascade, gray, min_size, found, scores):
        rects, _, weights = cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size), outputRejectLevels=True)
        found = list(found) + [tuple(r) for r in np.asarray(rects).reshape(-1, 4)]
        scores = list(scores) + [float(s) for s in np.asarray(weights).reshape(-1)]
        return found, scores


def crop_for_box(box, crop_scale, calibration=None):
    """The square crop (x, y, side) that the model expects for a face box (x, y, w, h), by a
    detector's ``calibration`` (default: the Haar detector's)."""
    c = calibration or FACE_BOX_TO_CROP
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2 + c["dx"] * w, y + h / 2 + c["dy"] * h
    side = crop_scale * c["size"] * w
    return np.array([cx - side / 2, cy - side / 2, side])


def calibrate(detector, samples):
    """Measure a detector's calibration on labelled faces: the medians of where each face's
    keypoint box sits relative to the detector box that found it (``crop_for_box``'s
    ``dx``, ``dy``, ``size``), with their 10th and 90th percentiles.

    ``samples``: (image, keypoints) pairs. A face counts when the box nearest to its keypoint
    box's centre lies within half the face's size of it."""
    rows, total = [], 0
    for image, keypoints in samples:
        total += 1
        kx, ky, kw, kh = keypoint_box(keypoints)
        kc, ksize = np.array([kx + kw / 2, ky + kh / 2]), max(kw, kh)
        boxes = np.asarray(detector(image)).reshape(-1, 4)
        if len(boxes) == 0:
            continue
        centres = boxes[:, :2] + boxes[:, 2:] / 2
        j = int(np.argmin(np.linalg.norm(centres - kc, axis=1)))
        x, y, w, h = boxes[j]
        if np.linalg.norm(centres[j] - kc) > 0.5 * ksize:
            continue
        rows.append(((kc[0] - centres[j][0]) / w, (kc[1] - centres[j][1]) / h, ksize / w))
    rows = np.array(rows)
    med = np.median(rows, axis=0)
    spread = np.percentile(rows, [10, 90], axis=0)
    return {"dx": round(float(med[0]), 4), "dy": round(float(med[1]), 4),
            "size": round(float(med[2]), 4), "faces": len(rows), "of": total,
            "p10": spread[0].round(4).tolist(), "p90": spread[1].round(4).tolist()}
