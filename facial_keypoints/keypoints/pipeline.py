"""The keypoint pipeline, the API: find every face in an image and put 68 keypoints on each.

    from facial_keypoints import KeypointPipeline
    pipe = KeypointPipeline()                        # the shipped model, BlazeFace, onnxruntime
    for face in pipe.get_landmarks("photo.jpg"):     # a path or an RGB array
        face.box, face.keypoints                     # (x, y, w, h) and a (68, 2) array
        face.score, face.confidence, face.roll       # detector score, fit confidence, degrees

A face detector (``detection``) finds the faces -> each detection becomes the square the model
was trained on, turned upright by the roll of the detector's eye points
(``detection.crops_for``: the detector's own calibration) -> cut (``geometry.warp_face``),
grayscale (or RGB) in [0, 1] exactly as in training (``images.unit_image``) -> the model
(``keypoints.runtime``: onnxruntime or PyTorch), all faces in one batch -> keypoints mapped
back to the original image's pixels; then, with ``refine``, once more from the upright square
around those keypoints (``geometry.upright_square``: the training crop rule). A head tilted by
any angle, up to upside down, is cut upright. A face whose fit the model doubts is tried again
from its first square turned a quarter and half a turn (``retry_turned``): the detector's roll
can be far off for a small face in a turned photo. A photo whose sure faces lean the same way
by 20 degrees or more (a turned photo) is searched once more turned upright
(``search_upright``): the detector finds more of its faces, and with better rolls, there.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np

from facial_keypoints.detection import DETECTORS
from facial_keypoints.detection.base import Detections, GivenBoxes, box_for_keypoints, crops_for
from facial_keypoints.geometry import (
    CROP_SCALE,
    eye_roll,
    mean_roll,
    turn_image,
    unwarp_keypoints,
    upright_square,
    warp_face,
    wrap_degrees,
)
from facial_keypoints.images import as_rgb_array, unit_image
from facial_keypoints.keypoints.confidence import probability
from facial_keypoints.keypoints.runtime import model_runtime
from facial_keypoints.landmarks import FLIP_INDICES, N_KEYPOINTS
from facial_keypoints.paths import DEFAULT_MODEL
from facial_keypoints.video.one_euro import DEFAULT_ONE_EURO
from facial_keypoints.video.tracker import FaceTracker

#: The most face crops that go through the network at once (more are split): memory stays
#: bounded however many faces an image has.
MAX_BATCH = 64
#: Given boxes: the largest coordinate and side, in pixels.
MAX_BOX = 1_000_000
#: A doubtful fit is tried again from its first square turned by these angles (degrees): a
#: detector's roll can be a quarter turn off (a small face turned sideways in a turned photo)
#: or half a turn (an eye line read the wrong way round). Chosen on the 300-W held-out fifth's
#: faces in group photos turned by 0 to 180 degrees (``benchmarks.benchmark_detection``):
#: 45-degree steps as well gave more wrong picks than they mended.
RETRY_TURNS = (90, -90, 180)
#: A face whose re-crop (``refine``) would move its square by at most this share of its side
#: (centre and side) and this many degrees keeps its first fit. Chosen on the course
#: validation people and the 300-W held-out fifth (``python -m benchmarks.refit``: of the
#: settings that cost at most 0.005 point of NME on each, the one that skips the most): there
#: it skips the second pass for about half the faces (course people) and three in five (300-W).
REFIT_WITHIN = (0.08, 4.0)
#: A photo whose sure faces lean by this many degrees or more on average is searched again,
#: turned upright (``search_upright``). Chosen on the same held-out group photos (30 degrees
#: left photos turned by 30 degrees unsearched); 0.5 % of the course frames lean this much.
ROLL_SEARCH = 20.0
#: ... and whose sure faces mostly agree on that lean: the length of their rolls' mean vector
#: at least this (1: all the same; 0.5: e.g. three faces leaning one way and a fourth, fitted
#: wrongly, the other; 0: two faces leaning opposite ways). Faces leaning every way have no
#: lean to turn upright.
ROLL_AGREEMENT = 0.5
#: A face found in the photo turned upright counts where its fit leans by at most this much
#: there (and lies on its detection): a stray detection there must not replace a first fit.
UPRIGHT_THERE = 45.0
#: The photo is shrunk to at most this side before it is turned for the second search (the
#: detectors work on smaller copies anyway; a turned canvas of a big photo is large).
SEARCH_SIDE = 1280


@dataclass
class Face:
    box: np.ndarray                 # (x, y, w, h) in image pixels
    keypoints: np.ndarray           # (68, 2) in image pixels
    score: float | None = None      # the detector's score (None: not detected, e.g. tracked)
    confidence: float | None = None  # the model's confidence in its fit, in [0, 1]
    roll: float = 0.0               # the face's roll in degrees (clockwise on screen)
    id: int | None = None           # the face's identity across video frames

    @property
    def finite(self) -> bool:
        """Whether the box and keypoints are finite numbers (a broken model can give NaN)."""
        return bool(np.isfinite(self.box).all() and np.isfinite(self.keypoints).all())

    def to_json(self):
        """The face as strict JSON: a face whose box or keypoints are not finite numbers gets
        ``null`` for them and an ``error`` instead."""
        ok = self.finite
        out = {"box": [_rounded(v, 1) for v in self.box],
               "keypoints": [[round(float(x), 2), round(float(y), 2)]
                             for x, y in self.keypoints] if ok else None,
               "score": _rounded(self.score, 3),
               "confidence": _rounded(self.confidence, 3) if ok else None,
               "roll": round(float(self.roll), 1) if ok else None}
        if not ok:
            out["error"] = ("the model gave keypoints that are not finite numbers (NaN or "
                            "infinity): the checkpoint is broken")
        if self.id is not None:
            out["id"] = int(self.id)
        return out


@dataclass(eq=False)
class Fits:
    """The faces of one image (or of several, batched) as arrays, before ``min_confidence``:
    the detector's ``boxes`` (N, 4) in image pixels, the ``squares`` (N, 4) as (cx, cy, side,
    angle) each face was first cut from, ``keypoints`` (N, 68, 2), the detector's ``scores``
    (N,) and the model's ``raw`` confidences (N,)."""
    boxes: np.ndarray
    squares: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    raw: np.ndarray

    @classmethod
    def none(cls):
        return cls(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, N_KEYPOINTS, 2)),
                   np.zeros(0), np.zeros(0))

    def arrays(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index):
        """The faces at ``index`` (a boolean mask or a list of indices)."""
        return Fits(*(a[index] for a in self.arrays()))

    def __add__(self, other):
        return Fits(*(np.concatenate([a, b]) for a, b in zip(self.arrays(), other.arrays())))


def _rounded(value, digits):
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


class KeypointPipeline:
    """Faces and their 68 keypoints for any image, with a trained checkpoint.

    Args:
        model: path of a checkpoint written by ``fkp-train``, or of its ONNX export (default:
            the shipped model).
        detector: ``"blazeface"`` (default), ``"haar"``, or a detector object (a callable
            image -> ``Detections`` with a ``calibration``, see ``detection.base``).
        markup: which mark-up a model with one head per mark-up gives: ``"300w"`` (the iBUG
            300-W standard; the default where the model has it) or ``"course"``.
        refine: how many times to re-crop around the predicted keypoints and predict again.
        refit_within: (share, degrees): a face whose re-crop would move its square's centre
            and side by at most that share of its side and its angle by at most that many
            degrees keeps its fit, as the refit would see the same crop, unless the model
            doubts the fit (``keeps_first_fit``; default ``REFIT_WITHIN``); None: every face
            is refitted.
        flip_tta: also predict on the mirrored crop and average (mirror table applied).
        backend: ``"onnx"`` (onnxruntime on the CPU, no PyTorch needed: the shipped model's
            ONNX twin, or a checkpoint exported to ``<model>.onnx`` first) or ``"torch"``
            (PyTorch: ``pip install 'facial-keypoints[train]'``); the same keypoints within
            0.05 px.
        device: for the torch back-end, e.g. ``"cuda"``.
        min_confidence: a detected face whose confidence is below this is dropped (not a
            face given by ``boxes``). None (default): the model's own threshold, the lowest
            confidence of a held-out real face as the pipeline found it, rounded down (its
            model card gives it); 0 keeps every detection.
        retry_turns: the turns (degrees) from which a doubtful fit is tried again
            (``retry_turned``); ``()``: never.
        roll_search: a photo whose sure faces lean together by at least this many degrees is
            searched again turned upright (``search_upright``); None: never.
        threads: onnxruntime's threads for the keypoint model (default: every core), e.g. a
            worker's share of the cores where several run side by side.
        precision: on the onnx back-end, "auto" (default: the checkpoint's INT8 twin where
            it has one made from it, as the shipped model has; else its float twin), "int8"
            (that twin or an error) or "fp32" (``keypoints.runtime``). The shipped INT8 twin
            was kept because its NME on held-out faces is within 0.05 point of the float
            model's (its model card gives both).

    ``Face.confidence`` is the probability that the fit is good (NME below 8 % of the
    distance between the outer eye corners), calibrated on held-out faces
    (``evaluation.calibration``); for a model shipped without that calibration, the network's
    raw confidence (higher is better, not a probability).
    """

    def __init__(self, model=DEFAULT_MODEL, detector="blazeface", markup=None, refine=1,
                 flip_tta=False, backend="onnx", device="cpu", min_confidence=None,
                 retry_turns=RETRY_TURNS, roll_search=ROLL_SEARCH, threads=None,
                 precision="auto", refit_within=REFIT_WITHIN):
        self.model_path = Path(model)
        self.retry_turns = tuple(float(t) for t in retry_turns)
        self.roll_search = None if roll_search is None else float(roll_search)
        #: ``min_confidence`` as asked for (None: the model's own, per mark-up)
        self.min_confidence_setting = min_confidence
        self.model, self.meta = model_runtime(self.model_path, backend, device, threads,
                                              precision)
        self.backend, self.device = backend, device
        self.size = self.meta["input_size"]
        self.crop_scale = self.meta.get("crop_scale", CROP_SCALE)
        norm = self.meta["normalization"]
        self.kp_mean, self.kp_std = norm["kp_mean"], norm["kp_std"]
        self.color = norm.get("image", "").startswith("rgb")
        markups = self.meta.get("markups") or ["course"]
        self.markups = list(markups)
        if markup is None:
            markup = "300w" if "300w" in self.markups else self.markups[0]
        self.flip_tta, self.refine = flip_tta, refine
        self.refit_within = None if refit_within is None else \
            (float(refit_within[0]), float(refit_within[1]))
        self.set_markup(markup)
        if isinstance(detector, str):
            if detector not in DETECTORS:
                raise ValueError(f"detector must be one of {sorted(DETECTORS)}, got {detector!r}")
            detector = DETECTORS[detector]()
        self.detector = detector

    def set_markup(self, markup):
        """Give the keypoints of this mark-up head from now on (with its measured offsets)."""
        if markup not in self.markups:
            raise ValueError(f"{self.model_path} has no {markup!r} head; it has {self.markups}")
        self.markup, self.head = markup, self.markups.index(markup)
        measured = (self.meta.get("confidence") or {}).get(markup) or {}
        #: below it a fit is doubtful (``retry_turned``, tracking): None without a measured one
        self.confidence_floor = measured.get("floor")   # on the raw scale
        #: raw confidence -> probability of a good fit (None: the model has none)
        self.calibration = measured.get("calibration")
        bias = self.meta.get("bias") or {}
        bias = bias.get(markup, bias)  # stored per mark-up, or (older checkpoints) once
        self.bias = {k: np.asarray(bias.get(k, (0.0, 0.0)), dtype=np.float64)
                     for k in ("plain", "mirrored")}

    # -- steps -----------------------------------------------------------------------------
    def detect(self, image) -> Detections:
        """The detector's faces in an RGB array."""
        found = self.detector(image)
        return found if isinstance(found, Detections) else \
            Detections(found, np.full(len(found), np.nan))

    def _run(self, batch):
        """The model on a batch: (keypoints (N, 68, 2) in crop pixels, confidence (N,))."""
        coords, conf = self.model.predict(batch)
        coords = coords[:, self.head].reshape(-1, N_KEYPOINTS, 2)
        return coords.astype(np.float64) * self.kp_std + self.kp_mean, \
            conf[:, self.head].astype(np.float64)

    def _input(self, image, crop):
        """One face crop as the model takes it: (C, S, S) float32 in [0, 1]."""
        face = unit_image(warp_face(image, crop, self.size), gray=not self.color)
        return face[None] if face.ndim == 2 else face.transpose(2, 0, 1)

    def crop_predictions(self, image, crops, mirrored=False):
        """The model's raw keypoints (N, 68, 2) in crop pixels for squares (cx, cy, side,
        angle), and its confidence (N,), in batches of at most ``MAX_BATCH``. ``image``: one
        image, or a list of one image per crop. With ``mirrored``, also its prediction on each
        mirrored crop, re-indexed by the mirror table but left in the mirrored crop's
        coordinates. No offset is subtracted here."""
        sources = image if isinstance(image, list) else [image] * len(crops)
        if len(crops) > MAX_BATCH:   # bounded memory, however many faces
            parts = [self.crop_predictions(sources[i:i + MAX_BATCH], crops[i:i + MAX_BATCH],
                                           mirrored) for i in range(0, len(crops), MAX_BATCH)]
            return tuple(None if parts[0][k] is None else np.concatenate([q[k] for q in parts])
                         for k in range(3))
        batch = np.stack([self._input(im, c) for im, c in zip(sources, crops)])
        if not mirrored:
            plain, conf = self._run(batch)
            return plain, None, conf
        both, conf = self._run(np.concatenate([batch, batch[..., ::-1]]))  # one run for both
        n = len(batch)
        return both[:n], both[n:][:, list(FLIP_INDICES)], conf[:n]

    def keypoints_for_crops(self, image, crops):
        """Keypoints (N, 68, 2) in image pixels and confidences (N,) for squares (N, 4) as
        (cx, cy, side, angle), less the model's measured mean offsets (``meta['bias']``).
        ``image``: one image, or a list of one image per crop (one batch for several images)."""
        crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
        if len(crops) == 0:
            return np.zeros((0, N_KEYPOINTS, 2)), np.zeros(0)
        plain, flipped, conf = self.crop_predictions(image, crops, mirrored=self.flip_tta)
        pts = plain - self.bias["plain"]
        if self.flip_tta:
            flipped = flipped - self.bias["mirrored"]
            flipped[..., 0] = self.size - 1 - flipped[..., 0]
            pts = (pts + flipped) / 2
        return np.stack([unwarp_keypoints(p, c, self.size) for p, c in zip(pts, crops)]), conf

    def keypoints_for(self, image, detections, detector=None):
        """Keypoints (N, 68, 2) and confidences (N,) for a detector's faces: the first
        prediction from the crop the detector's calibration gives (default detector: the
        pipeline's), then ``refine`` more from the upright square around the keypoints
        found; doubtful fits tried again (``retry_turned``)."""
        fits = self.fits_for(image, detections, detector)
        return fits.keypoints, fits.raw

    def fit_squares(self, image, crops):
        """``fit`` from the squares (N, 4) where a detector put faces, then ``retry_turned``."""
        crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
        return self.retry_turned(image, crops, *self.fit(image, crops))

    def fit(self, image, crops):
        """Keypoints and confidences from squares (N, 4), then ``refine`` refits from the upright
        square around the keypoints found, for the faces whose square that moves by more than
        ``refit_within`` and for those whose fit the model doubts (``keeps_first_fit``: the
        others keep their fit, as the refit would see nearly the same crop)."""
        pts, conf = self.keypoints_for_crops(image, crops)
        for _ in range(self.refine):
            redo = np.flatnonzero(~self.keeps_first_fit(crops, pts, conf))
            if len(redo) == 0:
                break
            images = [image[i] for i in redo] if isinstance(image, list) else image
            pts, conf = pts.copy(), conf.copy()
            pts[redo], conf[redo] = self.refit_keypoints(images, pts[redo])
            crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4).copy()
            crops[redo] = np.nan   # refitted: compared no more
        return pts, conf

    def keeps_first_fit(self, crops, keypoints, confidence):
        """(N,) whether each face keeps the fit from its first square instead of being
        refitted: its square was right (``square_was_right``) and the model does not doubt the
        fit (raw ``confidence`` not below the confidence floor, where the model has one). A
        doubtful fit is always refitted: a first pass alone scores lower than its refit, and
        only a fit still doubtful after its refit is tried again from turned squares
        (``retry_turned``), as when every face was refitted."""
        keep = self.square_was_right(crops, keypoints)
        if self.confidence_floor is not None:
            keep &= ~(np.asarray(confidence, dtype=np.float64) < self.confidence_floor)
        return keep

    def square_was_right(self, crops, keypoints):
        """(N,) whether each face's square (cx, cy, side, angle) is within ``refit_within`` of
        the upright square around the keypoints fitted in it (``geometry.upright_square``):
        centre and side within that share of the side, angle within that many degrees."""
        crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
        right = np.zeros(len(crops), dtype=bool)
        if self.refit_within is None:
            return right
        share, degrees = self.refit_within
        for i, (crop, pts) in enumerate(zip(crops, keypoints)):
            if np.isfinite(crop).all() and np.isfinite(pts).all():
                square = upright_square(pts, self.crop_scale)
                right[i] = (np.hypot(*(square[:2] - crop[:2])) <= share * crop[2]
                            and abs(math.log(square[2] / crop[2])) <= share
                            and abs(wrap_degrees(square[3] - crop[3])) <= degrees)
        return right

    def retry_turned(self, image, crops, keypoints, confidence):
        """Faces whose fit the model doubts (confidence below the floor that ``training.ship``
        measured on held-out faces) fitted again from their first squares ``crops`` (N, 4)
        turned by each of ``retry_turns``; the most confident fit is kept. What this mends: a
        square cut at a wrong roll (the detector's eye points of a small face turned sideways,
        or an eye line read the wrong way round), from which the refit cannot recover.
        ``image``: one image, or a list of one image per face."""
        floor = self.confidence_floor
        doubtful = np.flatnonzero(confidence < floor) \
            if floor is not None and self.retry_turns else []
        if len(doubtful) == 0:
            return keypoints, confidence
        turns = self.retry_turns
        crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
        tried = np.concatenate([crops[doubtful] + [0, 0, 0, t] for t in turns])
        images = [image[i] for i in doubtful] * len(turns) if isinstance(image, list) else image
        pts, conf = self.fit(images, tried)        # every turn of every doubtful face at once
        pts = pts.reshape(len(turns), len(doubtful), N_KEYPOINTS, 2)
        conf = conf.reshape(len(turns), len(doubtful))
        best = np.argmax(np.where(np.isfinite(conf), conf, -np.inf), axis=0)
        pick = np.arange(len(doubtful))
        better = conf[best, pick] > confidence[doubtful]
        keypoints, confidence = keypoints.copy(), confidence.copy()
        keypoints[doubtful[better]] = pts[best, pick][better]
        confidence[doubtful[better]] = conf[best, pick][better]
        return keypoints, confidence

    def refit_keypoints(self, image, keypoints):
        """Keypoints and confidences predicted again from the upright square around each
        face's previous keypoints (N, 68, 2); a face whose keypoints are not finite (a broken
        model) stays as it is, with no confidence."""
        finite = np.isfinite(keypoints).all(axis=(1, 2))
        if not finite.all():
            pts, conf = np.array(keypoints, dtype=np.float64), np.full(len(keypoints), np.nan)
            if finite.any():
                keep = np.flatnonzero(finite)
                images = [image[i] for i in keep] if isinstance(image, list) else image
                pts[keep], conf[keep] = self.refit_keypoints(images, keypoints[keep])
            return pts, conf
        crops = [upright_square(p, self.crop_scale) for p in keypoints]
        return self.keypoints_for_crops(image, crops)

    # -- the API -----------------------------------------------------------------------------
    def find_faces(self, image) -> list[Face]:
        """Every face the detector finds in an RGB array, with its keypoints (less those the
        model doubts: ``min_confidence``); a turned photo searched again upright
        (``search_upright``)."""
        return [f for f in self.as_faces(self.image_fits(image)) if self.confident(f.confidence)]

    def image_fits(self, image) -> Fits:
        """Every face of one RGB array as ``Fits``, before ``min_confidence``: detection, fits,
        ``search_upright``."""
        return self.search_upright(image, self.fits_for(image, self.detect(image)))

    def find_faces_in(self, images) -> list[list[Face]]:
        """Every face of several images (RGB arrays), the crops of all of them predicted
        together, in one batch per pass: for folders of photos (a turned photo's second search,
        ``search_upright``, then runs photo by photo)."""
        found = [self.detect(im) for im in images]
        owners = np.array([i for i, d in enumerate(found) for _ in range(len(d))], dtype=int)
        fits = Fits.none()
        if len(owners):
            hits = [d for d in found if len(d)]
            merged = Detections(np.concatenate([d.boxes for d in hits]),
                                np.concatenate([d.scores for d in hits]),
                                None if hits[0].points is None else
                                np.concatenate([d.points for d in hits]))
            fits = self.fits_for([images[i] for i in owners], merged)
        return [[f for f in self.as_faces(self.search_upright(im, fits[owners == i]))
                 if self.confident(f.confidence)] for i, im in enumerate(images)]

    def search_upright(self, image, fits) -> Fits:
        """The ``fits`` of one image, and more of them where the photo is turned: when its
        sure faces (not below the confidence floor; a model without one is never searched
        again) lean the same way (``ROLL_AGREEMENT``) by ``roll_search`` degrees or more on
        average, the detector runs again on the image turned upright by that lean (shrunk to
        ``SEARCH_SIDE`` first), where it finds small faces it missed and gives the rolls it
        was calibrated for. Each face found there is fitted from its square mapped back to the
        image (the model cuts the original pixels); where its fit shows it within
        ``UPRIGHT_THERE`` degrees of upright in the turned image (it leans like the photo) and
        lies on its detection (the centres of the fit's square and of the square cut within a
        quarter of its side), it replaces the first fits whose first square's centre lies
        within half that square's side of its own, whatever their confidence (keeping the
        more confident of the two instead found fewer faces and left more failed fits on the
        held-out group photos: ``results/README.md``). The other first fits stay."""
        floor = self.confidence_floor
        if self.roll_search is None or floor is None or len(fits) == 0:
            return fits
        sure = np.isfinite(fits.keypoints).all(axis=(1, 2)) & (fits.raw >= floor)
        if not sure.any():
            return fits
        lean, agreement = mean_roll([eye_roll(p) for p in fits.keypoints[sure]])
        if abs(lean) < self.roll_search or agreement < ROLL_AGREEMENT:
            return fits
        scale = min(1.0, SEARCH_SIDE / max(image.shape[:2]))
        small = image if scale == 1.0 else \
            cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        turned, matrix = turn_image(small, -lean)
        found = self.detect(turned)
        if len(found) == 0:
            return fits
        back = cv2.invertAffineTransform(matrix)

        def to_image(xy):   # turned-canvas pixels -> the image's (pixel centres kept)
            return ((xy @ back[:, :2].T + back[:, 2]) + 0.5) / scale - 0.5

        squares = crops_for(found, self.detector, self.crop_scale)
        squares[:, :2] = to_image(squares[:, :2])
        squares[:, 2] /= scale
        squares[:, 3] = wrap_degrees(squares[:, 3] + lean)
        x, y, w, h = found.boxes.T
        corners = to_image(np.stack([x, y, x + w, y, x, y + h, x + w, y + h], 1).reshape(-1, 4, 2))
        lo, hi = corners.min(axis=1), corners.max(axis=1)   # the box that holds the turned one
        pts, raw = self.fit_squares(image, squares)
        fitted = np.array([upright_square(p, self.crop_scale) for p in pts]).reshape(-1, 4)
        upright = np.abs(wrap_degrees(fitted[:, 3] - lean)) <= UPRIGHT_THERE
        on_box = np.linalg.norm(fitted[:, :2] - squares[:, :2], axis=1) < squares[:, 2] / 4
        again = Fits(np.concatenate([lo, hi - lo], axis=1), squares, pts, found.scores,
                     raw)[upright & on_box]
        near = np.linalg.norm(fits.squares[:, None, :2] - again.squares[None, :, :2], axis=2)
        stays = ~np.any(near < fits.squares[:, 2:3] / 2, axis=1)
        return fits[stays] + again

    @property
    def min_confidence(self) -> float:
        """Below this confidence a detected face is dropped: as asked for, else the model's
        own for the current mark-up (0 for a model without a calibration)."""
        if self.min_confidence_setting is not None:
            return float(self.min_confidence_setting)
        return float((self.calibration or {}).get("min_confidence", 0.0))

    @contextmanager
    def using_min_confidence(self, value):
        """Inside the block, ``min_confidence`` is ``value`` (None: the model's own); then it
        is what it was."""
        kept, self.min_confidence_setting = self.min_confidence_setting, value
        try:
            yield self
        finally:
            self.min_confidence_setting = kept

    def calibrated(self, raw):
        """The model's raw confidences as the probability of a good fit (unchanged for a
        model without a calibration)."""
        return np.asarray(raw, dtype=np.float64) if self.calibration is None else \
            probability(raw, self.calibration)

    def faces_for(self, image, detections, detector=None) -> list[Face]:
        """``Face`` objects for a detector's faces (``fits_for``), every one of them.
        ``image``: one image, or a list of one image per detection."""
        return self.as_faces(self.fits_for(image, detections, detector))

    def fits_for(self, image, detections, detector=None) -> Fits:
        """``Fits`` for a detector's faces, every one of them: each cut from the square the
        detector's calibration gives, fitted and refit, doubtful fits tried again
        (``fit_squares``)."""
        detector = detector or self.detector
        squares = crops_for(detections, detector, self.crop_scale)
        pts, raw = self.fit_squares(image, squares)
        return Fits(detections.boxes, squares, pts, detections.scores, raw)

    def as_faces(self, fits) -> list[Face]:
        """``Face`` objects for ``Fits``, with calibrated confidences and rolls."""
        return [Face(b, p, _finite(s), _finite(c), eye_roll(p)) for b, p, s, c in
                zip(fits.boxes, fits.keypoints, fits.scores, self.calibrated(fits.raw))]

    def confident(self, confidence) -> bool:
        """Whether a detected face of this (calibrated) confidence is kept: not below
        ``min_confidence``. A face without one (None or NaN, e.g. from a broken model) is
        kept: its JSON says what is wrong."""
        return confidence is None or not confidence < self.min_confidence

    def refit(self, image, keypoints_list) -> list[Face]:
        """Each face predicted again from its previous keypoints (video tracking: no
        detector); the box is the one the detector would draw around the new keypoints."""
        if len(keypoints_list) == 0:
            return []
        pts, raw = self.refit_keypoints(image, np.asarray(keypoints_list, dtype=np.float64))
        return [Face(box_for_keypoints(p, self.detector.calibration), p, None, _finite(c),
                     eye_roll(p)) for p, c in zip(pts, self.calibrated(raw))]

    def get_landmarks(self, image, boxes=None) -> list[Face]:
        """Every face in ``image`` (a path or an RGB/gray uint8 array) with its keypoints.

        ``boxes``: face boxes (x, y, w, h) to use instead of detection (``GivenBoxes``'s rule).
        Returns a list of ``Face`` (empty when no face is found). Raises ``ImageReadError`` for
        an unreadable file and ``ValueError`` for an unusable array.
        """
        image = as_rgb_array(image)
        if boxes is None:
            return self.find_faces(image)
        given = GivenBoxes(check_boxes(boxes))
        return self.faces_for(image, given(image), given)

    get_landmarks_from_image = get_landmarks

    def tracker(self, detect_every=10, fps=30.0, smoothing=True):
        """A ``video.tracker.FaceTracker`` on this pipeline for a video of ``fps`` frames per
        second: the
        detector every ``detect_every`` frames, refits in between, a refit counted as lost when the
        model's confidence falls below the floor measured for it (``training.ship``: the least
        confident 5 % of held-out faces; none for a model without confidence), One Euro smoothing
        unless ``smoothing`` is False."""
        floor = 0.0 if self.confidence_floor is None else \
            float(self.calibrated(self.confidence_floor))
        return FaceTracker(self, detect_every=detect_every, min_confidence=floor,
                           smoothing={**DEFAULT_ONE_EURO, "freq": fps} if smoothing else None)


def _finite(value):
    return None if value is None or not np.isfinite(value) else float(value)


def check_boxes(boxes):
    """Face boxes as an (N, 4) array of (x, y, w, h); a ValueError naming the first bad one
    unless each is four finite numbers with x, y within ``MAX_BOX`` pixels of the origin and
    w, h from 1 to ``MAX_BOX`` pixels."""
    rule = (f"face boxes must be a list of [x, y, w, h] with x, y within {MAX_BOX:,} px and w, "
            f"h from 1 to {MAX_BOX:,} px")
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):  # e.g. a dict, a string, ragged lists
        raise ValueError(f"{rule}, got {_short(boxes)}") from None
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{rule}, got {_short(boxes)}")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(arr).all(1) | (np.abs(arr[:, :2]) > MAX_BOX).any(1) | \
            (arr[:, 2:] < 1).any(1) | (arr[:, 2:] > MAX_BOX).any(1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{rule}; box {i} is {arr[i].tolist()}")
    return arr


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
