"""Video tracking and smoothing of 68 facial keypoints (pure logic: no model in here).

* :class:`OneEuroFilter` — the 1€ filter of Casiez, Roussel and Vogel (CHI 2012), vectorised
  over an array (e.g. (68, 2) keypoints) and normalised by the face's size, so that the same
  parameters suit a 40-px face and a 400-px one.
* :class:`FaceTracker` — keeps faces across frames with stable integer ids. It runs the
  expensive detector only on some frames and, between them, *refits* each face from its own
  previous keypoints (the cheap path), driving any object that follows :class:`Pipeline`.
  Each track's keypoints and box are smoothed with a One Euro filter.
* Measurement helpers for tuning: :func:`jitter`, :func:`lag`, :func:`delay`,
  :func:`simulate_clip` and :func:`tune_one_euro` (which chose :data:`DEFAULT_ONE_EURO`).

Box overlaps come from ``detectors.box_overlaps``; the rest is numpy.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from detectors import box_overlaps
from landmarks import FACE_LAYOUT

__all__ = [
    "DEFAULT_ONE_EURO", "FaceLike", "FaceTracker", "OneEuroFilter", "Pipeline", "Track",
    "choose_one_euro", "delay", "ema_smooth", "face_size", "format_table", "inside_fraction",
    "jitter", "lag", "match_boxes", "one_euro_smooth", "simulate_clip", "tune_one_euro",
]

#: Default One Euro parameters: cutoffs in Hz, ``beta`` in Hz per (face size per second); the
#: speed of a keypoint is the norm of its (x, y) velocity. Chosen by measurement:
#: ``choose_one_euro(tune_one_euro())`` — simulated 30-fps clips of a 100-px face with
#: Gaussian noise of 0.25, 1 and 2 px, three seeds — the setting that beats the old
#: exponential smoother (alpha 0.4) on still-face jitter and on moving-face lag at every
#: noise level with the best relative score. At 1 px noise: jitter 0.33 px/frame (EMA 0.56,
#: none 1.76), summed lag on the three moving clips 3.00 px (EMA 4.77), 0.66 frames of delay
#: on the sine (EMA 1.44). The optimum is flat: (0.5, 10) and (0.1, 15) score the same.
#: Read-only; pass ``{**DEFAULT_ONE_EURO, "beta": ...}`` to change a value.
DEFAULT_ONE_EURO = MappingProxyType({"min_cutoff": 0.3, "beta": 15.0, "d_cutoff": 1.0})

#: ``face_size`` = this factor times the RMS distance of the 68 points from their centroid:
#: about the width of the keypoints' extent for a frontal face (1.6x the outer-eye distance).
FACE_SIZE_FACTOR = 2.7


# ------------------------------------------------------------------------------------------
# The pipeline protocol
# ------------------------------------------------------------------------------------------
@runtime_checkable
class FaceLike(Protocol):
    """What the tracker needs of a face (any object with these attributes will do).

    ``box``: (x, y, w, h) in image pixels; ``keypoints``: (68, 2) in image pixels;
    ``score``: the detector's score, or None (e.g. for a refit); ``confidence``: the quality
    of the keypoint fit in [0, 1] (low = the fit looks wrong), or None when unknown.
    """

    box: Any
    keypoints: Any
    score: float | None
    confidence: float | None


@runtime_checkable
class Pipeline(Protocol):
    """What :class:`FaceTracker` drives.

    ``find_faces(image)``: full detection and keypoints (expensive), a list of faces.

    ``refit(image, keypoints_list)``: for each (68, 2) array of a previous frame's keypoints,
    the face predicted from the crop those keypoints give (cheap; the pipeline handles
    rotation). Returns a list of the same length, in the same order; an entry may be None
    when no fit could be made (treated like a fit with confidence 0).
    """

    def find_faces(self, image) -> list: ...

    def refit(self, image, keypoints_list: Sequence[np.ndarray]) -> list: ...


# ------------------------------------------------------------------------------------------
# One Euro filter
# ------------------------------------------------------------------------------------------
def _smoothing_factor(cutoff, dt):
    """Weight of the new sample in a first-order low-pass at ``cutoff`` Hz, step ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The 1€ filter (Casiez, Roussel and Vogel, CHI 2012), vectorised and size-normalised.

    A first-order low-pass filter whose cutoff rises with the speed of the signal:
    ``cutoff = min_cutoff + beta * speed``. At rest the cutoff is ``min_cutoff`` (strong
    smoothing: little jitter); when the signal moves the cutoff rises (little lag). The speed
    is the derivative of the input (from the previous *raw* value, as in the authors'
    reference code and MediaPipe), itself low-passed at ``d_cutoff`` Hz, and divided by
    ``scale`` — so it is measured in face sizes per second when ``scale`` is the face's size
    in pixels, and the same parameters work for a small and a large face.

    Every value of the array gets its own low-pass filter. ``speed_axes`` says which values
    share one speed (hence one cutoff): None = each value its own (the paper's per-dimension
    form); ``-1`` on (68, 2) keypoints = one speed per point, the norm of its (x, y) velocity
    (rotation-invariant). The output is always between the previous output and the new input
    (the weight is in (0, 1]), so the filter never overshoots and a constant input stays
    exactly constant.

    Args:
        min_cutoff: cutoff (Hz) at rest; lower = smoother, more lag at low speed.
        beta: how fast the cutoff rises with speed (Hz per face size per second when
            ``scale`` is the face size); higher = less lag when moving.
        d_cutoff: cutoff (Hz) of the low-pass on the derivative.
        freq: sampling rate (Hz) used when no timestamp is given (and when timestamps do not
            increase: some videos repeat a frame time).
        speed_axes: None, an int or a tuple of ints (see above).
    """

    def __init__(self, min_cutoff=DEFAULT_ONE_EURO["min_cutoff"],
                 beta=DEFAULT_ONE_EURO["beta"], d_cutoff=DEFAULT_ONE_EURO["d_cutoff"],
                 freq=30.0, speed_axes=None):
        for name, v in (("min_cutoff", min_cutoff), ("d_cutoff", d_cutoff), ("freq", freq)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a non-negative number, got {beta!r}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.freq = float(freq)
        self.speed_axes = speed_axes
        self.reset()

    def reset(self):
        """Forget the past: the next call returns its input unchanged."""
        self._raw = None   # previous raw input
        self._out = None   # previous output
        self._dx = None    # previous low-passed derivative
        self._t = None     # previous timestamp (s), or None

    def __call__(self, x, t=None, scale=1.0):
        """Filter one sample ``x`` taken at time ``t`` (s; None = ``1 / freq`` after the last).

        ``scale``: the face's size in pixels (a positive number, or an array broadcastable
        to the speed's shape). Returns a new float64 array shaped like ``x``.
        """
        x = np.array(x, dtype=np.float64)  # a copy: the caller may reuse its array
        if self._out is None:
            self._raw, self._out, self._dx = x, x.copy(), np.zeros_like(x)
            self._t = None if t is None else float(t)
            return x.copy()
        if x.shape != self._out.shape:
            raise ValueError(f"expected an array of shape {self._out.shape}, got {x.shape}")
        scale = np.asarray(scale, dtype=np.float64)
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError(f"scale must be positive, got {scale!r}")
        dt = 1.0 / self.freq
        if t is not None:
            if self._t is not None and float(t) > self._t:
                dt = float(t) - self._t
            self._t = float(t)
        elif self._t is not None:
            self._t += dt
        dx = (x - self._raw) / dt
        self._dx = self._dx + _smoothing_factor(self.d_cutoff, dt) * (dx - self._dx)
        if self.speed_axes is None:
            speed = np.abs(self._dx)
        else:
            speed = np.sqrt(np.sum(self._dx ** 2, axis=self.speed_axes, keepdims=True))
        cutoff = self.min_cutoff + self.beta * speed / scale
        a = _smoothing_factor(cutoff, dt)
        self._out = self._out + a * (x - self._out)
        self._raw = x
        return self._out.copy()


def face_size(keypoints) -> float:
    """A face's size in pixels from its keypoints: ``FACE_SIZE_FACTOR`` x the RMS distance of
    the points from their centroid (rotation-invariant, averaged over all points; about the
    width of the keypoints' extent for a frontal face). At least 1e-6."""
    pts = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    rms = np.sqrt(np.mean(np.sum((pts - pts.mean(0)) ** 2, axis=1)))
    return max(float(FACE_SIZE_FACTOR * rms), 1e-6)


# ------------------------------------------------------------------------------------------
# Box helpers
# ------------------------------------------------------------------------------------------
def _iou(boxes_a, boxes_b) -> np.ndarray:
    """IoU of every pair of (x, y, w, h) boxes (``detectors.box_overlaps``; 0 where undefined)."""
    return np.nan_to_num(box_overlaps(boxes_a, boxes_b)[0], nan=0.0)


def match_boxes(boxes_a, boxes_b, min_iou=0.3):
    """Greedy one-to-one matching by IoU (highest first) of (x, y, w, h) boxes.

    Returns a list of (i, j) pairs (index in ``boxes_a``, index in ``boxes_b``) with
    IoU >= ``min_iou``.
    """
    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return []
    iou = _iou(boxes_a, boxes_b)
    pairs, used_a, used_b = [], set(), set()
    order = np.argsort(-iou, axis=None, kind="stable")
    for flat in order:
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < min_iou or iou[i, j] <= 0:
            break
        if i in used_a or j in used_b:
            continue
        pairs.append((int(i), int(j)))
        used_a.add(i)
        used_b.add(j)
    return pairs


def inside_fraction(box, width, height) -> float:
    """Fraction of the (x, y, w, h) box's area that lies inside a ``width`` x ``height`` image
    (0 for an empty box)."""
    x, y, w, h = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    if w <= 0 or h <= 0:
        return 0.0
    iw = max(0.0, min(x + w, width) - max(x, 0.0))
    ih = max(0.0, min(y + h, height) - max(y, 0.0))
    return iw * ih / (w * h)


def _with(face, **changes):
    """A copy of ``face`` with attributes changed or added (a dataclass through
    ``dataclasses.replace`` for its init fields, anything else through ``copy.copy``)."""
    if dataclasses.is_dataclass(face) and not isinstance(face, type):
        names = {f.name for f in dataclasses.fields(face) if f.init}
        new = dataclasses.replace(face, **{k: v for k, v in changes.items() if k in names})
        rest = {k: v for k, v in changes.items() if k not in names}
    else:
        new, rest = copy.copy(face), changes
    for k, v in rest.items():
        object.__setattr__(new, k, v)  # also works on a frozen dataclass
    return new


def _as_float_array(value):
    arr = np.asarray(value)
    return arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float64


# ------------------------------------------------------------------------------------------
# Tracker
# ------------------------------------------------------------------------------------------
@dataclass
class Track:
    """One face followed across frames.

    ``face`` is the latest *raw* (unsmoothed) face from the pipeline: its keypoints are what
    the next refit starts from. ``visible``: the face has a current fit (it is returned);
    a track that is not visible is *lost* and waits, for up to ``max_missed`` detector runs,
    to be matched again near its last box. ``missed``: detector runs in a row that have not
    seen it (a detection matched to it, or a confident refit, counts as seeing it).
    """

    id: int
    face: Any
    first_frame: int
    last_seen: int
    visible: bool = True
    missed: int = 0
    hits: int = 1
    keypoint_filter: OneEuroFilter | None = field(default=None, repr=False)
    box_filter: OneEuroFilter | None = field(default=None, repr=False)

    @property
    def keypoints(self) -> np.ndarray:
        return np.asarray(self.face.keypoints)

    @property
    def box(self) -> np.ndarray:
        return np.asarray(self.face.box)


class FaceTracker:
    """Faces with stable ids across video frames, the detector run only now and then.

    Per frame (``tracker(image, t)``):

    * The detector (``pipeline.find_faces``) runs on the first frame, every ``detect_every``
      frames after the last run, on every frame while no face is being tracked (there is
      nothing to refit then), and on any frame where a visible track's refit fails: the
      refit is None, its ``confidence`` is below ``min_confidence``, or its box lies less
      than ``min_inside`` inside the image (the face is leaving).
    * On the other frames every visible track is refitted (``pipeline.refit``) from its own
      previous raw keypoints.
    * At a detector run, detections are matched to the visible tracks by box IoU (greedy,
      highest IoU first, at least ``match_iou``; against the refitted box when the track was
      refitted this frame, else its last box), then the remaining detections to the lost
      tracks by their last box. A matched track takes the detection. A visible track that no
      detection matched is refitted (unless it already was this frame) and stays visible if
      the refit is good: the detector missing a face that still fits well does not end it.
      Otherwise it becomes lost. Each unmatched detection whose ``confidence`` is None or at
      least ``min_confidence``, and that does not overlap a visible track by more than
      ``duplicate_iou``, starts a new track with a new id; ids are never reused.
    * Lost tracks are not returned. A track not seen for more than ``max_missed`` detector
      runs in a row is dropped. **A face that leaves and comes back** is found again at the
      next detector run; it keeps its id if it comes back within that grace window
      (``max_missed`` runs) with a box overlapping its last box by at least ``match_iou``;
      otherwise it gets a new id.
    * Two visible tracks whose boxes overlap by more than ``duplicate_iou`` (a refit that
      slid onto another face) are merged: the older id stays, the other track is dropped.
    * Smoothing: each track has a One Euro filter on its keypoints (one speed per point) and
      one on its box, normalised by :func:`face_size` of the raw keypoints; the filters are
      reset when a lost track is found again. The returned faces carry the smoothed box and
      keypoints and an ``id``; the track keeps the raw face, which the next refit uses.

    Args:
        pipeline: an object following :class:`Pipeline`.
        detect_every: run the detector at least every this many frames (1 = every frame).
        min_confidence: a refit (or a new detection) below this confidence is not trusted.
        max_missed: detector runs a track may go unseen before it is dropped.
        smoothing: One Euro parameters (``OneEuroFilter`` keyword arguments, e.g.
            ``DEFAULT_ONE_EURO`` plus ``freq`` for the frame rate used when ``t`` is None),
            or None for no smoothing.
        match_iou: least IoU for a detection to match a track.
        duplicate_iou: IoU above which two visible tracks are one face.
        min_inside: least fraction of a refitted box inside the image.
        frame_size: callable image -> (width, height), or None when unknown (then the
            "left the image" test is skipped); default: ``image.shape`` when it has one.

    Counters: ``frames``, ``detector_runs`` (calls of ``find_faces``), ``refit_calls``
    (calls of ``refit``) and ``refits`` (faces refitted).
    """

    def __init__(self, pipeline, detect_every=10, min_confidence=0.5, max_missed=2,
                 smoothing: Mapping | None = DEFAULT_ONE_EURO, match_iou=0.3,
                 duplicate_iou=0.5, min_inside=0.5,
                 frame_size: Callable | None = None):
        if int(detect_every) < 1:
            raise ValueError(f"detect_every must be at least 1, got {detect_every!r}")
        if int(max_missed) < 0:
            raise ValueError(f"max_missed must be at least 0, got {max_missed!r}")
        self.pipeline = pipeline
        self.detect_every = int(detect_every)
        self.min_confidence = float(min_confidence)
        self.max_missed = int(max_missed)
        self.smoothing = None if smoothing is None else dict(smoothing)
        if self.smoothing is not None:
            OneEuroFilter(**self.smoothing)  # fail now on bad parameters
        self.match_iou = float(match_iou)
        self.duplicate_iou = float(duplicate_iou)
        self.min_inside = float(min_inside)
        self.frame_size = frame_size if frame_size is not None else _shape_size
        self.reset()

    def reset(self):
        """Forget every track and zero the counters (ids start again from 0)."""
        self.tracks: list[Track] = []
        self.frames = 0
        self.detector_runs = 0
        self.refit_calls = 0
        self.refits = 0
        self._next_id = 0
        self._last_detect = None
        self._size = None

    # -- per frame ------------------------------------------------------------------------
    def __call__(self, image, t=None) -> list:
        frame = self.frames
        self.frames += 1
        self._size = self.frame_size(image)
        visible = [tr for tr in self.tracks if tr.visible]
        detect = (not visible or self._last_detect is None
                  or frame - self._last_detect >= self.detect_every)
        fits, tried = {}, set()
        if not detect:
            fits = self._refit(image, visible)
            tried = {tr.id for tr in visible}
            detect = len(fits) < len(visible)
        if detect:
            self._detect(image, frame, fits, tried)
        else:
            for tr in visible:
                self._see(tr, fits[tr.id], frame)
        self._merge_duplicates()
        self.tracks = [tr for tr in self.tracks if tr.missed <= self.max_missed]
        return [self._output(tr, t) for tr in sorted(self.tracks, key=lambda tr: tr.id)
                if tr.visible]

    def _good(self, face) -> bool:
        if face is None:
            return False
        conf = getattr(face, "confidence", None)
        if conf is not None and not conf >= self.min_confidence:  # NaN is not good
            return False
        return not (self._size is not None and self.min_inside > 0
                    and inside_fraction(face.box, *self._size) < self.min_inside)

    def _refit(self, image, tracks) -> dict:
        """Refit ``tracks``; returns {track id: face} for the good fits only."""
        if not tracks:
            return {}
        faces = list(self.pipeline.refit(image, [tr.keypoints for tr in tracks]))
        if len(faces) != len(tracks):
            raise ValueError(f"pipeline.refit returned {len(faces)} faces for "
                             f"{len(tracks)} keypoint arrays")
        self.refit_calls += 1
        self.refits += len(tracks)
        return {tr.id: f for tr, f in zip(tracks, faces) if self._good(f)}

    def _detect(self, image, frame, fits, tried):
        self.detector_runs += 1
        self._last_detect = frame
        dets = list(self.pipeline.find_faces(image))
        free = list(range(len(dets)))
        visible = [tr for tr in self.tracks if tr.visible]
        lost = [tr for tr in self.tracks if not tr.visible]

        # 1. visible tracks, by their box in this frame when refitted, else their last box
        boxes = [fits[tr.id].box if tr.id in fits else tr.box for tr in visible]
        matched = set()
        used = set()
        for i, j in match_boxes(boxes, [dets[k].box for k in free], self.match_iou):
            self._see(visible[i], dets[free[j]], frame)
            matched.add(visible[i].id)
            used.add(free[j])
        free = [k for k in free if k not in used]
        # 2. lost tracks, by their last box
        for i, j in match_boxes([tr.box for tr in lost], [dets[k].box for k in free],
                                self.match_iou):
            self._see(lost[i], dets[free[j]], frame, found_again=True)
            matched.add(lost[i].id)
            used.add(free[j])
        free = [k for k in free if k not in used]

        # 3. visible tracks the detector did not confirm: keep them while they fit well
        unconfirmed = [tr for tr in visible if tr.id not in matched]
        rescue = [tr for tr in unconfirmed if tr.id not in tried]
        fits = {**fits, **self._refit(image, rescue)}
        for tr in unconfirmed:
            if tr.id in fits:
                self._see(tr, fits[tr.id], frame)
            else:
                tr.visible = False
                tr.missed += 1
        for tr in lost:
            if tr.id not in matched:
                tr.missed += 1

        # 4. new faces: not a second copy of a face already tracked
        for k in free:
            conf = getattr(dets[k], "confidence", None)
            if conf is not None and not conf >= self.min_confidence:
                continue
            taken = [tr.box for tr in self.tracks if tr.visible]
            if taken and _max_iou(dets[k].box, taken) > self.duplicate_iou:
                continue
            self.tracks.append(self._new_track(dets[k], frame))

    def _see(self, tr, face, frame, found_again=False):
        tr.face = face
        tr.last_seen = frame
        tr.missed = 0
        tr.hits += 1
        if found_again:
            tr.visible = True
            for f in (tr.keypoint_filter, tr.box_filter):
                if f is not None:
                    f.reset()

    def _new_track(self, face, frame) -> Track:
        tr = Track(id=self._next_id, face=face, first_frame=frame, last_seen=frame)
        self._next_id += 1
        if self.smoothing is not None:
            tr.keypoint_filter = OneEuroFilter(**{"speed_axes": -1, **self.smoothing})
            tr.box_filter = OneEuroFilter(**{**self.smoothing, "speed_axes": None})
        return tr

    def _merge_duplicates(self):
        visible = sorted((tr for tr in self.tracks if tr.visible), key=lambda tr: tr.id)
        if len(visible) < 2:
            return
        iou = _iou([tr.box for tr in visible], [tr.box for tr in visible])
        gone = set()
        for i in range(len(visible)):
            if i in gone:
                continue
            for j in range(i + 1, len(visible)):
                if j not in gone and iou[i, j] > self.duplicate_iou:
                    gone.add(j)
        drop = {visible[j].id for j in gone}
        self.tracks = [tr for tr in self.tracks if tr.id not in drop]

    def _output(self, tr, t):
        face = tr.face
        box, kps = np.asarray(face.box), np.asarray(face.keypoints)
        if tr.keypoint_filter is not None:
            scale = face_size(kps)
            kps = tr.keypoint_filter(kps, t, scale).astype(_as_float_array(face.keypoints))
            box = tr.box_filter(box, t, scale).astype(_as_float_array(face.box))
        else:
            box = np.array(box, dtype=_as_float_array(face.box))
            kps = np.array(kps, dtype=_as_float_array(face.keypoints))
        return _with(face, box=box, keypoints=kps, id=tr.id)


def _max_iou(box, boxes) -> float:
    return float(_iou([box], boxes).max())


def _shape_size(image):
    shape = getattr(image, "shape", None)
    if shape is None or len(shape) < 2:
        return None
    return int(shape[1]), int(shape[0])


# ------------------------------------------------------------------------------------------
# Measurement and tuning
# ------------------------------------------------------------------------------------------
# One frontal face's 68 points (iBUG order), used to simulate clips.
_TEMPLATE = np.array(FACE_LAYOUT, dtype=np.float64)

MOTIONS = ("still", "drift", "ramp_step", "sine")


def simulate_clip(motion="still", frames=150, fps=30.0, size=100.0, noise=1.0, seed=0,
                  center=(320.0, 240.0), speed=0.25, step=0.3, amplitude=0.3, period=2.0,
                  drift=0.05):
    """A face on a known path, and the same path seen with Gaussian noise.

    ``motion``: ``"still"``; ``"drift"`` (moving right slowly, ``drift`` face sizes per
    second, all along); ``"ramp_step"`` (still for the first third, then moving right at
    ``speed`` face sizes per second for the second third, then a jump of ``step`` face sizes
    and still again); ``"sine"`` (side to side, ``amplitude`` face sizes, ``period`` s).
    ``size``: the face's :func:`face_size` in pixels; ``noise``: the std (px) of the
    independent Gaussian noise added to every coordinate of every frame.

    Returns (true, noisy), each a float64 (frames, 68, 2) array.
    """
    c = _TEMPLATE - _TEMPLATE.mean(0)
    base = c * (size / face_size(_TEMPLATE)) + np.asarray(center, dtype=np.float64)
    n = int(frames)
    time = np.arange(n) / fps
    dx = np.zeros(n)
    if motion == "still":
        pass
    elif motion == "drift":
        dx = drift * size * time
    elif motion == "ramp_step":
        a, b = n // 3, 2 * n // 3
        dx[a:b] = speed * size * (time[a:b] - time[a])
        dx[b:] = speed * size * (time[b - 1] - time[a] + 1.0 / fps) + step * size
    elif motion == "sine":
        dx = amplitude * size * np.sin(2 * np.pi * time / period)
    else:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    true = base[None] + np.stack([dx, np.zeros(n)], axis=-1)[:, None, :]
    rng = np.random.default_rng(seed)
    return true, true + rng.normal(0.0, noise, true.shape)


def jitter(frames) -> float:
    """Mean frame-to-frame movement (px) of the points over a (T, ..., 2) sequence: on a still
    face, how much the output shakes. 0 for fewer than two frames."""
    pts = np.asarray(frames, dtype=np.float64)
    if len(pts) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(pts, axis=0), axis=-1).mean())


def lag(path_true, path_filtered) -> float:
    """Mean distance (px) between filtered and true positions over a (T, ..., 2) sequence: on
    a moving face, the error the smoothing's delay (plus what is left of the noise) costs."""
    a = np.asarray(path_true, dtype=np.float64)
    b = np.asarray(path_filtered, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    return float(np.linalg.norm(b - a, axis=-1).mean())


def delay(path_true, path_filtered, max_shift=15) -> float:
    """The delay (frames, fractional) that best aligns the filtered path with the true one:
    the shift d minimising the mean distance between filtered[t] and true[t - d], refined by a
    parabola through the best integer shift and its neighbours."""
    a = np.asarray(path_true, dtype=np.float64)
    b = np.asarray(path_filtered, dtype=np.float64)
    n = len(a)
    max_shift = int(min(max_shift, n - 2))
    errs = np.array([np.linalg.norm(b[d:] - a[:n - d], axis=-1).mean()
                     for d in range(max_shift + 1)])
    d = int(np.argmin(errs))
    if 0 < d < max_shift:
        e0, e1, e2 = errs[d - 1], errs[d], errs[d + 1]
        den = e0 - 2 * e1 + e2
        if den > 0:
            return float(d + 0.5 * (e0 - e2) / den)
    return float(d)


def ema_smooth(frames, alpha=0.4):
    """The old smoother (``detect.KeypointSmoother``): new = alpha * x + (1 - alpha) * prev."""
    x = np.asarray(frames, dtype=np.float64)
    out = np.empty_like(x)
    out[0] = x[0]
    for i in range(1, len(x)):
        out[i] = alpha * x[i] + (1 - alpha) * out[i - 1]
    return out


def one_euro_smooth(frames, fps=30.0, scale=None, **params):
    """Run a fresh :class:`OneEuroFilter` (keypoint settings: one speed per point) over a
    (T, 68, 2) sequence; ``scale`` = the face size (default: :func:`face_size` per frame)."""
    x = np.asarray(frames, dtype=np.float64)
    f = OneEuroFilter(**{"speed_axes": -1, "freq": fps, **params})
    return np.stack([f(xi, scale=face_size(xi) if scale is None else scale) for xi in x])


def _measure(smooth, clips, step_frame, step_px):
    """One smoother's row of measurements on :func:`tune_one_euro`'s clips."""
    row = {"jitter_still": np.mean([jitter(smooth(noisy)) for _, noisy in clips["still"]])}
    row["lag_drift"] = np.mean([lag(tr, smooth(noisy)) for tr, noisy in clips["drift"]])
    outs = [(true, smooth(noisy)) for true, noisy in clips["ramp_step"]]
    row["lag_ramp"] = np.mean([lag(tr, o) for tr, o in outs])
    settle = []
    for tr, o in outs:
        err = np.linalg.norm(o[step_frame:] - tr[step_frame:], axis=-1).mean(-1)
        ok = np.nonzero(err <= 0.1 * step_px)[0]
        settle.append(ok[0] if len(ok) else len(err))
    row["step_frames"] = np.mean(settle)
    outs = [(true, smooth(noisy)) for true, noisy in clips["sine"]]
    row["lag_sine"] = np.mean([lag(tr, o) for tr, o in outs])
    row["delay_sine"] = np.mean([delay(tr, o) for tr, o in outs])
    row["lag_moving"] = row["lag_drift"] + row["lag_ramp"] + row["lag_sine"]
    return row


def tune_one_euro(min_cutoffs=(0.1, 0.3, 0.5, 1.0, 2.0), betas=(0.0, 3.0, 5.0, 10.0, 15.0, 20.0),
                  d_cutoff=1.0, fps=30.0, size=100.0, noise=1.0, noises=(0.25, 1.0, 2.0),
                  frames=150, seeds=(0, 1, 2), ema_alpha=0.4):
    """Measure smoothers on simulated clips: a table (list of dicts), one row per setting.

    Rows: no smoothing, the old EMA (``ema_alpha``), then One Euro (keypoint settings, one
    speed per point) over the grid ``min_cutoffs`` x ``betas``. Clips from
    :func:`simulate_clip` at ``fps``, face size ``size`` px, 68 points. Columns measured with
    noise std ``noise`` px, each averaged over ``seeds``:

    * ``jitter_still``: :func:`jitter` (px per frame) of the output on the still face;
    * ``lag_drift``, ``lag_ramp``, ``lag_sine``: :func:`lag` (mean distance to the true path,
      px) on the ``drift``, ``ramp_step`` and ``sine`` clips; ``lag_moving``: their sum;
    * ``step_frames``: frames after the jump of ``ramp_step`` until the output is within 10 %
      of the jump of the true position (0 = at the jump's own frame);
    * ``delay_sine``: :func:`delay` (frames) on the sine clip;

    and, over every noise std in ``noises``:

    * ``score``: the mean over ``noises`` of ``jitter_still / EMA's`` plus the mean over the
      three moving clips of ``lag_<clip> / EMA's`` (each motion counts alike; 2.0 for the EMA;
      lower is better);
    * ``beats_ema``: at every noise std, ``jitter_still`` no more than the EMA's and
      ``lag_moving`` less than the EMA's.
    """
    noises = tuple(noises)
    if noise not in noises:
        noises += (noise,)
    step_frame, step_px = 2 * frames // 3, 0.3 * size  # simulate_clip's default step
    settings = [("none", None, None, lambda x: x),
                (f"ema {ema_alpha}", None, None, lambda x: ema_smooth(x, ema_alpha))]
    for mc in min_cutoffs:
        for beta in betas:
            settings.append(("one_euro", mc, beta, lambda x, mc=mc, beta=beta: one_euro_smooth(
                x, fps, min_cutoff=mc, beta=beta, d_cutoff=d_cutoff)))
    by_noise = {}
    for sd in noises:
        clips = {m: [simulate_clip(m, frames, fps, size, sd, seed=s) for s in seeds]
                 for m in MOTIONS}
        by_noise[sd] = [_measure(fn, clips, step_frame, step_px) for *_, fn in settings]
    table = []
    for k, (method, mc, beta, _) in enumerate(settings):
        row = {"method": method, "min_cutoff": mc, "beta": beta, **by_noise[noise][k]}
        scores, beats = [], True
        for rows in by_noise.values():
            r, ema = rows[k], rows[1]
            scores.append(r["jitter_still"] / ema["jitter_still"]
                          + np.mean([r[c] / ema[c] for c in ("lag_drift", "lag_ramp", "lag_sine")]))
            beats &= (r["jitter_still"] <= ema["jitter_still"]
                      and r["lag_moving"] < ema["lag_moving"])
        row["score"] = np.mean(scores)
        row["beats_ema"] = bool(beats) if method == "one_euro" else None
        table.append({k2: (round(float(v), 3) if isinstance(v, (float, np.floating)) else v)
                      for k2, v in row.items()})
    return table


def choose_one_euro(table):
    """The One Euro row of :func:`tune_one_euro`'s table that beats the EMA at every noise
    level (``beats_ema``) with the lowest ``score``; None if no row does."""
    ok = [r for r in table if r["method"] == "one_euro" and r["beats_ema"]]
    return min(ok, key=lambda r: r["score"]) if ok else None


def format_table(table) -> str:
    """A Markdown table of :func:`tune_one_euro`'s rows."""
    cols = list(table[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in table:
        lines.append("| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |")
    return "\n".join(lines)
