"""Find every face in an image and put 68 keypoints on each: the API and the command.

Command (``python detect.py --help`` documents every option)::

    python detect.py                                   # the bundled photo -> out/annotated/
    python detect.py photo.jpg folder/ clip.mp4 --json out.json --annotate out_dir/
    python detect.py photo.jpg --boxes boxes.json      # skip detection for these images

API, in the spirit of face-alignment's ``get_landmarks_from_image``::

    from detect import FaceKeypointDetector
    detector = FaceKeypointDetector()                  # the shipped model
    for face in detector.get_landmarks("photo.jpg"):   # a path or an RGB array
        face.box, face.keypoints                       # (x, y, w, h) and a (68, 2) array

The pipeline: Haar cascade face boxes (OpenCV) -> each box turned into the square face crop the
model was trained on (a calibrated rule, see ``FACE_BOX_TO_CROP``) -> grayscale, resized,
normalised exactly as in training -> the model, in one batch -> keypoints mapped back to the
original image's pixels.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

import data_load
from data_load import (ImageReadError, crop_face, keypoint_box, load_image, square_crop_box,
                       uncrop_keypoints)
from models import ModelLoadError, load_model

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = ROOT / "saved_models" / "keypoints_resnet18.pt"
DEFAULT_PHOTO = ROOT / "images" / "astronaut.jpg"   # NASA, public domain (skimage.data)
CASCADE_DIR = ROOT / "detector_architectures"
BACKENDS = ("torch", "onnx")
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}

#: How a Haar ``frontalface`` box (x, y, w, h) relates to the face as the model sees it: the
#: centre of the keypoints' bounding box is at (x + w/2 + dx*w, y + h/2 + dy*h) and its larger
#: side is ``size * w``. Medians measured on the training split by
#: ``python evaluate.py --calibrate --subset 600`` with the default HaarFaceDetector (594 of 600
#: training faces found and matched; 10th-90th percentiles: dx -0.12..0.13, dy 0.12..0.21,
#: size 0.80..1.01). Training jitters its crops to cover part of that spread
#: (data_load.face_transform) and ``FaceKeypointDetector(refine=1)`` re-crops around the first
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


def box_iou(a, b):
    """IoU of two (x, y, w, h) boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def merge_boxes(boxes, scores, iou=0.3):
    """Greedy non-maximum suppression: keep the best-scored of overlapping boxes."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    kept = []
    for i in order:
        b = boxes[i]
        if all(box_iou(b, k) < iou and _overlap_of_smaller(b, k) < 0.7 for k in kept):
            kept.append(b)
    return np.array(kept, dtype=np.float64).reshape(-1, 4)


def _overlap_of_smaller(a, b):
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih / max(min(a[2] * a[3], b[2] * b[3]), 1e-9)


class HaarFaceDetector:
    """Haar cascade face detection on images of any size.

    The image is brought to a working size (small images are upscaled so that small faces
    reach the cascade's 24-px minimum, huge ones downscaled for speed) and padded at the border
    so that a face filling the whole frame is still found. With ``profile=True`` the profile
    cascade runs on the image and its mirror too; overlapping boxes are merged.
    """

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
    """The square crop (x, y, side) that the model expects for a face box (x, y, w, h)."""
    c = calibration or FACE_BOX_TO_CROP
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2 + c["dx"] * w, y + h / 2 + c["dy"] * h
    side = crop_scale * c["size"] * w
    return np.array([cx - side / 2, cy - side / 2, side])


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
            from export import onnx_model_for

            self.model = onnx_model_for(self.model_path).to(device)
        self.device = device
        self.size = self.meta["input_size"]
        self.crop_scale = self.meta.get("crop_scale", 1.3)
        norm = self.meta["normalization"]
        self.kp_mean, self.kp_std = norm["kp_mean"], norm["kp_std"]
        self.flip_tta = flip_tta
        self.refine = refine
        bias = self.meta.get("bias") or {}
        self.bias = {k: np.asarray(bias.get(k, (0.0, 0.0)), dtype=np.float64)
                     for k in ("plain", "mirrored")}
        self.detector = detector if detector is not None else HaarFaceDetector()
        self._to_input = data_load.v2.Compose([data_load.Normalize(self.kp_mean, self.kp_std),
                                               data_load.ToTensor()])

    # -- steps -----------------------------------------------------------------------------
    def detect_faces(self, image) -> np.ndarray:
        return self.detector(image)

    @torch.inference_mode()
    def crop_predictions(self, image, crops, mirrored=False):
        """The model's raw keypoints (N, 68, 2) in crop pixels for square crops (x, y, side).

        With ``mirrored``, also its prediction on each mirrored crop, re-indexed by the mirror
        table but left in the mirrored crop's coordinates. No offset is subtracted here.
        """
        dummy = np.zeros((68, 2), np.float32)
        batch = torch.stack([self._to_input({"image": crop_face(image, c, self.size),
                                             "keypoints": dummy})["image"] for c in crops])
        batch = batch.to(self.device)

        def predict(x):
            out = self.model(x).view(-1, 68, 2).cpu().numpy().astype(np.float64)
            return out * self.kp_std + self.kp_mean

        plain = predict(batch)
        if not mirrored:
            return plain, None
        return plain, predict(torch.flip(batch, dims=[-1]))[:, list(data_load.FLIP_INDICES)]

    def keypoints_for_crops(self, image, crops) -> np.ndarray:
        """Keypoints (N, 68, 2) in image pixels for square crops (N, 3) as (x, y, side)."""
        crops = np.asarray(crops, dtype=np.float64).reshape(-1, 3)
        if len(crops) == 0:
            return np.zeros((0, 68, 2))
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
        boxes = _check_boxes(boxes)
        pts = self.keypoints_for_boxes(image, boxes)
        return [Face(b, p) for b, p in zip(boxes, pts)]

    get_landmarks_from_image = get_landmarks


def as_rgb_array(image) -> np.ndarray:
    """A path or an array as an RGB uint8 array (H, W, 3)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"expected an RGB(A) or grayscale image array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.max() <= 1.0:
            arr = arr * 255.0
        elif arr.dtype == np.uint16:
            arr = arr / 257.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[:, :, :3])


def _check_boxes(boxes):
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


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------
REGION_COLORS = {"jaw": (255, 200, 0), "brows": (255, 80, 80), "nose": (80, 220, 80),
                 "eyes": (80, 160, 255), "mouth": (255, 80, 255)}


def draw_faces(image, faces, box_color=(0, 255, 0)):
    """A copy of an RGB image with each face's box and keypoints drawn."""
    out = np.ascontiguousarray(image.copy())
    scale = max(1, round(max(out.shape[:2]) / 500))
    for face in faces:
        x, y, w, h = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x, y), (x + w, y + h), box_color, scale)
        for region, idx in data_load.REGIONS.items():
            for px, py in face.keypoints[list(idx)]:
                cv2.circle(out, (int(round(px)), int(round(py))), max(1, scale + 1),
                           REGION_COLORS[region], -1, cv2.LINE_AA)
    return out


def render(image, faces, filter_name=None):
    """The annotated picture: boxes and keypoints, or (with ``filter_name``) a face filter."""
    if filter_name:
        import filters

        return filters.apply_filter(image, faces, filter_name)
    return draw_faces(image, faces)


def save_rgb(path, image):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


# --------------------------------------------------------------------------------------------
# Video: smoothing over time
# --------------------------------------------------------------------------------------------
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
                iou = box_iou(face.box, self.tracks[i][0])
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


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------
def expand_inputs(paths):
    """Image files, folders (their images, sorted) and video files, in the order given."""
    items = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.is_file()
                           and f.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
            items += [str(f) for f in files]
        else:
            items.append(str(p))
    return items


def is_video(path):
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _annotated_name(out_dir, path, suffix=None):
    p = Path(path)
    return Path(out_dir) / f"{p.stem}_keypoints{suffix or p.suffix or '.png'}"


def process_image(detector, path, boxes, annotate, filter_name=None):
    entry = {"path": path, "width": None, "height": None, "faces": [], "error": None}
    try:
        image = load_image(path)
    except ImageReadError as e:
        entry["error"] = str(e)
        return entry
    entry["height"], entry["width"] = image.shape[:2]
    faces = detector.get_landmarks(image, boxes=boxes)
    entry["faces"] = [f.to_json() for f in faces]
    if annotate:
        suffix = Path(path).suffix.lower()
        suffix = suffix if suffix in (".jpg", ".jpeg", ".png") else ".png"
        save_rgb(_annotated_name(annotate, path, suffix), render(image, faces, filter_name))
    return entry


def process_video(detector, path, annotate, progress=True, alpha=0.4, filter_name=None):
    """One entry per frame; keypoints smoothed over time. Returns (entries, error or None)."""
    from tqdm import tqdm

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        return [{"path": path, "frame": None, "width": None, "height": None, "faces": [],
                 "error": f"{path}: not a readable video"}], True
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    smoother = KeypointSmoother(alpha)
    writer, entries, index = None, [], 0
    with tqdm(total=total, desc=Path(path).name, unit="frame", disable=not progress) as bar:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            faces = smoother(detector.get_landmarks(rgb))
            h, w = rgb.shape[:2]
            entries.append({"path": path, "frame": index, "width": w, "height": h,
                            "faces": [f.to_json() for f in faces], "error": None})
            if annotate:
                if writer is None:
                    out = _annotated_name(annotate, path, ".mp4")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                writer.write(cv2.cvtColor(render(rgb, faces, filter_name), cv2.COLOR_RGB2BGR))
            index += 1
            bar.update(1)
    cap.release()
    if writer is not None:
        writer.release()
    if index == 0:
        return [{"path": path, "frame": None, "width": None, "height": None, "faces": [],
                 "error": f"{path}: a video with no readable frame"}], True
    return entries, False


def read_boxes_file(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--boxes {path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f'--boxes {path}: expected {{"<image path>": [[x, y, w, h], ...]}}')
    return {str(k): _check_boxes(v) for k, v in data.items()}


def build_parser():
    p = argparse.ArgumentParser(
        prog="detect.py",
        description="Find every face in images, folders of images or videos and predict 68 "
                    "keypoints (iBUG order) on each, in the original image's pixels.",
        epilog="Exit status: 0 when every input was read, 1 when some could not be (they get "
               "an 'error' in the JSON and the others are still processed), 2 for bad usage "
               "(including a missing or unusable --model or --boxes file).")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="image file, folder of images, or video file; with none, the bundled "
                        f"photo {DEFAULT_PHOTO.relative_to(ROOT)} is used and an annotated copy "
                        "is written (to out/annotated/ unless --annotate says otherwise)")
    p.add_argument("--json", metavar="OUT.json",
                   help='write {"model", "images": [{"path", "width", "height", "faces": '
                        '[{"box": [x, y, w, h], "keypoints": [[x0, y0], ...]}], "error"}]}; '
                        'a video gives one entry per frame, with a "frame" number')
    p.add_argument("--annotate", metavar="OUT_DIR",
                   help="write a copy of each image (or video) with boxes and keypoints drawn")
    p.add_argument("--boxes", metavar="BOXES.json",
                   help='face boxes {"<path as given>": [[x, y, w, h], ...]} that skip detection '
                        "for those images (boxes like a face detector's, as tight as Haar's)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), metavar="FILE",
                   help="checkpoint written by train.py (default: the shipped model)")
    p.add_argument("--filter", choices=("sunglasses", "moustache", "hat", "blur"),
                   help="with --annotate (or no PATH): draw this face filter (filters.py) "
                        "instead of boxes and keypoints, on images and videos")
    p.add_argument("--flip-tta", action="store_true",
                   help="average with the prediction on the mirrored face (slower, steadier)")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="run the network with PyTorch or with onnxruntime (faster on a CPU; "
                        "exports <model>.onnx beside the checkpoint the first time)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    paths = args.paths
    annotate = args.annotate
    if not paths:
        paths = [str(DEFAULT_PHOTO)]
        annotate = annotate or str(ROOT / "out" / "annotated")
    if args.filter and not annotate:
        parser.error("--filter draws on the annotated copies: give --annotate OUT_DIR")
    if args.json and Path(args.json).is_dir():
        parser.error(f"--json {args.json} is a folder: give a file name, e.g. {args.json}/out.json")
    if args.backend == "onnx":
        torch.set_num_threads(1)  # torch only crops; onnxruntime runs the network
    try:
        boxes = read_boxes_file(args.boxes) if args.boxes else {}
        detector = FaceKeypointDetector(args.model, flip_tta=args.flip_tta, backend=args.backend)
    except (ValueError, ModelLoadError) as e:
        print(f"detect.py: error: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    items = expand_inputs(paths)
    entries, failed = [], False
    for p in paths:
        if Path(p).is_dir() and not expand_inputs([p]):
            entries.append({"path": p, "width": None, "height": None, "faces": [],
                            "error": f"{p}: a folder with no image or video files"})
            failed = True
    t0 = time.perf_counter()
    show = not args.quiet and len(items) > 1
    for path in tqdm(items, desc="images", unit="file", disable=not show):
        if is_video(path) and Path(path).is_file():
            video_entries, bad = process_video(detector, path, annotate, progress=not args.quiet,
                                               filter_name=args.filter)
            entries += video_entries
            failed |= bad
            continue
        entry = process_image(detector, path, boxes.get(path), annotate, args.filter)
        failed |= entry["error"] is not None
        entries.append(entry)
    result = {"model": str(args.model), "images": entries}
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, out)
    if not args.quiet:
        n_faces = sum(len(e["faces"]) for e in entries)
        n_bad = sum(e["error"] is not None for e in entries)
        print(f"{len(entries)} image(s)/frame(s), {n_faces} face(s), {n_bad} unreadable, "
              f"{time.perf_counter() - t0:.2f} s" + (f"; annotated -> {annotate}" if annotate else ""))
        for e in entries:
            if e["error"]:
                print(f"  error: {e['error']}", file=sys.stderr)
            elif not e["faces"] and "frame" not in e:
                print(f"  no face found in {e['path']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
