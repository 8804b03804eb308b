"""``FaceTracker``: faces kept across video frames with stable integer ids. It runs the
expensive detector only on some frames and, between them, refits each face from its own
previous keypoints (the cheap path), driving any object that follows ``Pipeline``. Each track's
keypoints and box are smoothed with a One Euro filter (``video.one_euro``).
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from facial_keypoints.detection.base import box_overlaps
from facial_keypoints.video.one_euro import DEFAULT_ONE_EURO, OneEuroFilter

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
    """IoU of every pair of (x, y, w, h) boxes (``detection.base.box_overlaps``; 0 where
    undefined)."""
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
