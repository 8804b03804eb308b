"""The keypoint pipeline, the API: find every face in an image and put 68 keypoints on each.

    from pipeline import FaceKeypointDetector
    detector = FaceKeypointDetector()                  # the shipped model
    for face in detector.get_landmarks("photo.jpg"):   # a path or an RGB array
        face.box, face.keypoints                       # (x, y, w, h) and a (68, 2) array

Face boxes from a detector (``detectors.py``) -> each box turned into the square face crop the
model was trained on (the detector's calibration, ``detectors.crop_for_box``) -> grayscale,
resized, normalised exactly as in training -> the model, in one batch -> keypoints mapped back
to the original image's pixels; then, with ``refine``, once more from a crop around those
keypoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from data_load import (
    CROP_SCALE,
    Normalize,
    ToTensor,
    crop_face,
    keypoint_box,
    square_crop_box,
    uncrop_keypoints,
)
from detectors import HaarFaceDetector, box_overlaps, crop_for_box
from export import onnx_model_for
from images import as_rgb_array
from landmarks import FLIP_INDICES, N_KEYPOINTS
from models import DEFAULT_MODEL, load_model

BACKENDS = ("torch", "onnx")


@dataclass
class Face:
    box: np.ndarray        # (x, y, w, h) in image pixels
    keypoints: np.ndarray  # (68, 2) in image pixels

    def to_json(self):
        return {"box": [round(float(v), 1) for v in self.box],
                "keypoints": [[round(float(x), 2), round(float(y), 2)] for x, y in self.keypoints]}


class FaceKeypointDetector:
    """Faces and their 68 keypoints for any image, with a trained checkpoint.

    Args:
        model: path of a checkpoint written by ``train.py`` (default: the shipped model).
        flip_tta: also predict on the mirrored crop and average (mirror table applied).
        detector: a callable image -> (N, 4) face boxes (default: ``HaarFaceDetector()``).
        refine: how many times to re-crop around the predicted keypoints and predict again.
        backend: ``"torch"`` or ``"onnx"`` (onnxruntime on the CPU, the checkpoint exported to
            ``<model>.onnx`` by ``export.py`` when needed; same keypoints within 0.05 px). It is
            fastest with ``torch.set_num_threads(1)`` set first (``export.OnnxKeypointModel``).
    """

    def __init__(self, model=DEFAULT_MODEL, flip_tta=False, detector=None, device="cpu",
                 refine=1, backend="torch"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.model_path = Path(model)
        self.model, self.meta = load_model(self.model_path)
        self.model.to(device)
        self.backend = backend
        if backend == "onnx":
            self.model = onnx_model_for(self.model_path).to(device)
        self.device = device
        self.size = self.meta["input_size"]
        self.crop_scale = self.meta.get("crop_scale", CROP_SCALE)
        norm = self.meta["normalization"]
        self.kp_mean, self.kp_std = norm["kp_mean"], norm["kp_std"]
        self.flip_tta = flip_tta
        self.refine = refine
        bias = self.meta.get("bias") or {}
        self.bias = {k: np.asarray(bias.get(k, (0.0, 0.0)), dtype=np.float64)
                     for k in ("plain", "mirrored")}
        self.detector = detector if detector is not None else HaarFaceDetector()
        self._to_input = v2.Compose([Normalize(self.kp_mean, self.kp_std), ToTensor()])

    # -- steps -----------------------------------------------------------------------------
    def detect_faces(self, image) -> np.ndarray:
        return self.detector(image)

    @torch.inference_mode()
    def crop_predictions(self, image, crops, mirrored=False):
        """The model's raw keypoints (N, 68, 2) in crop pixels for square crops (x, y, side).

        With ``mirrored``, also its prediction on each mirrored crop, re-indexed by the mirror
        table but left in the mirrored crop's coordinates. No offset is subtracted here.
        """
        dummy = np.zeros((N_KEYPOINTS, 2), np.float32)
        batch = torch.stack([self._to_input({"image": crop_face(image, c, self.size),
                                             "keypoints": dummy})["image"] for c in crops])
        batch = batch.to(self.device)

        def predict(x):
            out = self.model(x).view(-1, N_KEYPOINTS, 2).cpu().numpy().astype(np.float64)
            return out * self.kp_std + self.kp_mean

        plain = predict(batch)
        if not mirrored:
            return plain, None
        return plain, predict(torch.flip(batch, dims=[-1]))[:, list(FLIP_INDICES)]

    def keypoints_for_crops(self, image, crops) -> np.ndarray:
        """Keypoints (N, 68, 2) in image pixels for square crops (N, 3) as (x, y, side)."""
        crops = np.asarray(crops, dtype=np.float64).reshape(-1, 3)
        if len(crops) == 0:
            return np.zeros((0, N_KEYPOINTS, 2))
        # Less the model's measured mean offset (``meta['bias']``, measured on validation faces
        # by ``evaluate.measure_bias``; zero when absent).
        plain, flipped = self.crop_predictions(image, crops, mirrored=self.flip_tta)
        pts = plain - self.bias["plain"]
        if self.flip_tta:
            flipped = flipped - self.bias["mirrored"]
            flipped[..., 0] = self.size - 1 - flipped[..., 0]   # as torchvision mirrors
            pts = (pts + flipped) / 2
        return np.stack([uncrop_keypoints(p, c, self.size) for p, c in zip(pts, crops)])

    def keypoints_for_boxes(self, image, boxes) -> np.ndarray:
        """Keypoints (N, 68, 2) for face boxes (N, 4) as (x, y, w, h).

        The first prediction is made on the crop the calibrated rule gives for the box; with
        ``refine`` > 0 the face is cropped again around the predicted keypoints, by the rule the
        model was trained with, and predicted again (a face box never sits exactly where the
        training crops did; the second crop does).
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        crops = [crop_for_box(b, self.crop_scale) for b in boxes]
        pts = self.keypoints_for_crops(image, crops)
        for _ in range(self.refine):
            crops = [square_crop_box(keypoint_box(p), self.crop_scale) for p in pts]
            pts = self.keypoints_for_crops(image, crops)
        return pts

    # -- the API -----------------------------------------------------------------------------
    def get_landmarks(self, image, boxes=None) -> list[Face]:
        """Every face in ``image`` (a path or an RGB/gray uint8 array) with its keypoints.

        ``boxes``: face boxes (x, y, w, h) to use instead of detection. Returns a list of
        ``Face`` (empty when no face is found). Raises ``ImageReadError`` for an unreadable
        file and ``ValueError`` for an unusable array.
        """
        image = as_rgb_array(image)
        if boxes is None:
            boxes = self.detect_faces(image)
        boxes = check_boxes(boxes)
        pts = self.keypoints_for_boxes(image, boxes)
        return [Face(b, p) for b, p in zip(boxes, pts)]

    get_landmarks_from_image = get_landmarks


def check_boxes(boxes):
    message = f"face boxes must be a list of [x, y, w, h] with w, h > 0, got {boxes!r}"
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):  # e.g. a dict, a string, ragged lists
        raise ValueError(message) from None
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all() or (arr[:, 2:] <= 0).any():
        raise ValueError(message)
    return arr


class KeypointSmoother:
    """Smooth each tracked face's keypoints over frames (exponential moving average).

    Faces are matched to the previous frame's by box overlap; a new face starts unsmoothed.
    ``alpha`` is the weight of the new frame: lower is smoother but lags more.
    """

    def __init__(self, alpha=0.4, match_iou=0.3):
        self.alpha, self.match_iou = alpha, match_iou
        self.tracks = []  # list of (box, keypoints)

    def __call__(self, faces):
        smoothed, tracks = [], []
        free = list(range(len(self.tracks)))
        for face in faces:
            best, best_iou = None, self.match_iou
            for i in free:
                iou = box_overlaps(face.box, self.tracks[i][0])[0][0, 0]
                if iou >= best_iou:
                    best, best_iou = i, iou
            if best is None:
                box, pts = face.box, face.keypoints
            else:
                free.remove(best)
                pbox, ppts = self.tracks[best]
                box = self.alpha * face.box + (1 - self.alpha) * pbox
                pts = self.alpha * face.keypoints + (1 - self.alpha) * ppts
            tracks.append((box, pts))
            smoothed.append(Face(box, pts))
        self.tracks = tracks
        return smoothed


def jitter(keypoint_frames):
    """Mean frame-to-frame keypoint movement (pixels) of one face over a list of (68, 2)."""
    pts = np.asarray(keypoint_frames, dtype=np.float64)
    if len(pts) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(pts, axis=0), axis=-1).mean())
