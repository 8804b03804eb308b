"""dlib, the reference this project measures itself against (benchmark-only; ``pip install
dlib-bin face-recognition-models``): its usual pipeline (the HOG face detector and a 68-point
shape predictor, ``DlibPipeline``) with its shipped model, and the same method trained by dlib's
own trainer on this project's faces (``train``, cached by ``same_data_predictor``; the command
is ``python -m benchmarks.dlib_same_data``).

The shipped dlib model (``shape_predictor_68_face_landmarks.dat``) was trained by dlib's author
on the 300-W data with mirrored copies, and seems to have seen more photos than this project can
train on (it does better on the 300-W test photos than on the training ones). To compare the
*methods* on equal data, ``train`` runs dlib's ensemble of regression trees
(``dlib.train_shape_predictor``, ``shape_predictor_training_options()`` left at dlib's
defaults, which its author says the shipped model used) on the 300-W faces this project trains
on: every face of ``300w_train`` and ``300w_afw`` (1,830), each also mirrored (the 68 points
re-indexed by ``landmarks.FLIP_INDICES``), as dlib's author added mirrors. (This project's own
model holds a fifth of the ``300w_train`` photos out for validation and also trains on the
course's faces.) Each face's box is what dlib's HOG detector (upsampled once) finds on it, as
in the benchmark's pipeline; where it finds none, the labels' box is placed the way the
detector's boxes sit on the faces it did find (their mean offset and scale). The predictor is
never shipped: it is cached under ``runs/dlib_same_data/`` with a JSON note of how it was made.
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import cv2
import numpy as np

from facial_keypoints.detection.base import crop_for_box
from facial_keypoints.evaluation.evaluate import match_detection, split_dataset
from facial_keypoints.files import atomic_path, atomic_write_json
from facial_keypoints.landmarks import FLIP_INDICES
from facial_keypoints.paths import HOME

DLIB_HINT = "pip install dlib-bin face-recognition-models (benchmark-only dependencies)"


def dlib_predictor_path() -> Path:
    """``shape_predictor_68_face_landmarks.dat`` as shipped by ``face-recognition-models``.

    Found without importing that package (its ``__init__`` needs setuptools' pkg_resources).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"dlib's 68-point model is not installed: {DLIB_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / \
        "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall face-recognition-models")
    return path


class DlibPipeline:
    """dlib's HOG face detector and 68-point shape predictor (the setup face_recognition uses).

    ``upsample``: how many times dlib doubles the image before detection (face_recognition's
    default is 1; 0 is faster and misses faces under about 80 px). ``predictor``: another
    shape predictor file (default: dlib's shipped 68-point model), e.g. the one
    ``benchmarks.dlib_same_data`` trains on this project's faces.
    """

    def __init__(self, upsample=0, predictor=None):
        try:
            import dlib  # optional, for this benchmark only
        except ImportError:
            raise RuntimeError(f"dlib is not installed: {DLIB_HINT}") from None
        self.dlib, self.upsample = dlib, upsample
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(predictor or dlib_predictor_path()))

    def detect(self, gray) -> list:
        return list(self.detector(gray, self.upsample))

    def keypoints(self, gray, rect) -> np.ndarray:
        shape = self.predictor(gray, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    @staticmethod
    def box(rect) -> np.ndarray:
        return np.array([rect.left(), rect.top(), rect.width(), rect.height()], dtype=np.float64)



#: dlib's boxes taken as they are: the crop is the box itself.
AS_IS = {"dx": 0.0, "dy": 0.0, "size": 1.0}


def _dlib_match(boxes, gt):
    """The dlib box that covers the labelled face: ``evaluate.match_detection`` with the box
    taken as it is (its centre within a quarter of the face's size of the keypoints' centre,
    its side within a factor 2 of the face's)."""
    crops = [crop_for_box(b, 1.0, AS_IS) for b in boxes]
    return match_detection(crops, gt, 1.0, size_factor=2.0)


CACHE = HOME / "runs" / "dlib_same_data" / "shape_predictor_68_same_data.dat"
#: The 300-W sets it trains on: the project's 300-W training faces.
TRAINING_SETS = ("300w", "300w_afw")


def label_box(pts) -> np.ndarray:
    """(x, y, w, h) of the keypoints' bounding box."""
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return np.r_[lo, hi - lo]


def training_faces(dlib, progress=True):
    """(grayscale images, boxes (x, y, w, h), keypoints (68, 2)) of the training faces, and how
    many boxes came from the detector."""
    detector = dlib.get_frontal_face_detector()
    images, points, boxes, found = [], [], [], []
    for name in TRAINING_SETS:
        ds = split_dataset(name)
        for i in range(len(ds)):
            sample = ds[i]
            gray = cv2.cvtColor(np.asarray(sample["image"])[..., :3], cv2.COLOR_RGB2GRAY)
            pts = np.asarray(sample["keypoints"], dtype=np.float64)
            lb = label_box(pts)
            centre, side = lb[:2] + lb[2:] / 2, lb[2:].max()
            best = None
            for r in detector(gray, 1):
                b = np.array([r.left(), r.top(), r.width(), r.height()], dtype=np.float64)
                near = np.abs(b[:2] + b[2:] / 2 - centre).max() < side / 4
                if near and 0.5 < b[2] / side < 2 and (best is None or b[2] > best[2]):
                    best = b
            images.append(gray), points.append(pts), boxes.append(best), found.append(best)
        if progress:
            print(f"{name}: {len(ds)} faces", flush=True)
    # where the detector found none: the labels' box placed as its boxes sit on the others
    rel = np.array([((b[:2] + b[2:] / 2) - (label_box(p)[:2] + label_box(p)[2:] / 2))
                    / label_box(p)[2:].max() for b, p in zip(found, points) if b is not None])
    scale = np.mean([b[2] / label_box(p)[2:].max() for b, p in zip(found, points)
                     if b is not None])
    shift = rel.mean(axis=0)
    for i, b in enumerate(boxes):
        if b is None:
            lb = label_box(points[i])
            side = lb[2:].max()
            centre = lb[:2] + lb[2:] / 2 + shift * side
            boxes[i] = np.r_[centre - scale * side / 2, scale * side, scale * side]
    return images, boxes, points, sum(b is not None for b in found)


def mirrored(gray, box, pts):
    """The face mirrored left to right: image, box and keypoints (re-indexed)."""
    w = gray.shape[1]
    flipped = np.ascontiguousarray(gray[:, ::-1])
    box = np.array([w - box[0] - box[2], box[1], box[2], box[3]])
    pts = np.c_[w - 1 - pts[:, 0], pts[:, 1]][list(FLIP_INDICES)]
    return flipped, box, pts


def train(dest=CACHE, progress=True, options=None) -> Path:
    """Train dlib's shape predictor on the training faces and their mirrors; cache it at
    ``dest`` (atomically) with ``<dest>.json`` describing the run. ``options``: dlib's
    ``shape_predictor_training_options`` (default: dlib's defaults)."""
    import dlib  # benchmark-only dependency

    t0 = time.perf_counter()
    images, boxes, points, detected = training_faces(dlib, progress)
    pictures, objects = [], []
    for gray, box, pts in zip(images, boxes, points):
        for g, b, p in ((gray, box, pts), mirrored(gray, box, pts)):
            rect = dlib.rectangle(*(int(round(v)) for v in (b[0], b[1], b[0] + b[2],
                                                             b[1] + b[3])))
            parts = [dlib.point(int(round(x)), int(round(y))) for x, y in p]
            pictures.append(g)
            objects.append([dlib.full_object_detection(rect, parts)])
    if options is None:
        options = dlib.shape_predictor_training_options()   # dlib's defaults
    if progress:
        print(f"training dlib's shape predictor on {len(pictures)} faces ({len(images)} and "
              f"their mirrors; {detected} boxes from the HOG detector), options {options}",
              flush=True)
    predictor = dlib.train_shape_predictor(pictures, objects, options)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        predictor.save(str(tmp))
    minutes = (time.perf_counter() - t0) / 60
    atomic_write_json(dest.with_suffix(".json"), {
        "trained_by": "python -m benchmarks.dlib_same_data", "dlib": dlib.__version__,
        "options": str(options), "faces": len(images), "with_mirrors": len(pictures),
        "boxes_from_detector": detected, "sets": list(TRAINING_SETS),
        "minutes": round(minutes, 1)})
    if progress:
        print(f"-> {dest} ({minutes:.1f} min)")
    return dest


def same_data_predictor(progress=True) -> Path:
    """The cached predictor, trained first when it is not there."""
    if not CACHE.is_file():
        if progress:
            print(f"{CACHE} is not there: training it now (about half an hour on 2 cores)",
                  flush=True)
        train(CACHE, progress)
    return CACHE
