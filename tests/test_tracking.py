"""tracking.py: the One Euro filter, the face tracker (with a fake pipeline) and the tuning
helpers. No model and no image: a "frame" is an index with a shape, and the fake pipeline
knows where its synthetic faces are in each frame."""
from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass

import numpy as np
import pytest

from conftest import face_layout
from facial_keypoints.video import smoothing, tracker
from facial_keypoints.video.one_euro import DEFAULT_ONE_EURO, OneEuroFilter
from facial_keypoints.video.smoothing import (
    delay,
    ema_smooth,
    jitter,
    lag,
    one_euro_smooth,
    simulate_clip,
)
from facial_keypoints.video.tracker import FaceTracker, face_size, inside_fraction, match_boxes

FPS = 30.0


# ------------------------------------------------------------------------------------------
# One Euro filter
# ------------------------------------------------------------------------------------------
def run_filter(f, frames, scale=1.0, times=None):
    return np.stack([f(x, None if times is None else times[i], scale)
                     for i, x in enumerate(frames)])


def test_first_call_returns_input_and_reset_forgets():
    f = OneEuroFilter()
    x = face_layout()
    np.testing.assert_array_equal(f(x, scale=100), x)
    moved = f(x + 10, scale=100)
    assert not np.allclose(moved, x + 10)          # smoothed: not the new input
    f.reset()
    np.testing.assert_array_equal(f(x + 10, scale=100), x + 10)


@pytest.mark.parametrize("speed_axes", [None, -1])
@pytest.mark.parametrize("scale", [1.0, 37.5, 400.0])
def test_constant_input_stays_exactly_constant(speed_axes, scale):
    x = face_layout(center=(123.4, 56.7), width=80).astype(np.float64)
    f = OneEuroFilter(speed_axes=speed_axes)
    out = run_filter(f, [x] * 50, scale=scale, times=np.arange(50) / 24.0)
    assert (out == x).all()


def test_step_is_followed_quickly_and_never_overshot():
    size, step = 100.0, 30.0  # a jump of 0.3 face sizes
    x0 = face_layout(width=size).astype(np.float64)
    frames = [x0] * 10 + [x0 + [step, 0.0]] * 40
    out = run_filter(OneEuroFilter(**DEFAULT_ONE_EURO, freq=FPS, speed_axes=-1), frames, size)
    moved = out[10:, :, 0].mean(1) - x0[:, 0].mean()
    reached = np.nonzero(moved >= 0.9 * step)[0][0]
    assert reached <= 2                              # 90 % of the step within 3 frames
    assert (out[10:, :, 0] <= x0[:, 0] + step + 1e-9).all()   # never past the step
    assert (np.diff(out[9:, :, 0], axis=0) >= -1e-12).all()    # monotone: no ringing
    assert moved[-1] == pytest.approx(step, abs=1e-3)
    # without the speed term (beta 0) the same step takes far longer: beta matters
    slow = run_filter(OneEuroFilter(DEFAULT_ONE_EURO["min_cutoff"], 0.0, freq=FPS),
                      frames, size)[10:, :, 0].mean(1) - x0[:, 0].mean()
    assert np.nonzero(slow >= 0.9 * step)[0][0] > 10 * (reached + 1)


def test_same_noise_relative_to_face_size_gives_the_same_result():
    """A face k times bigger with k times the pixel noise: the output is k times the output
    for the small face (speed is measured in face sizes)."""
    _, noisy = simulate_clip("sine", frames=60, size=50.0, noise=1.0, seed=3)
    k = 4.0
    small = one_euro_smooth(noisy, FPS, scale=50.0)
    big = one_euro_smooth(noisy * k, FPS, scale=50.0 * k)
    np.testing.assert_allclose(big, small * k, rtol=1e-9, atol=1e-9)
    # the per-frame face size from the keypoints gives the same invariance
    np.testing.assert_allclose(one_euro_smooth(noisy * k, FPS), one_euro_smooth(noisy, FPS) * k,
                               rtol=1e-9, atol=1e-9)
    # without the normalisation it would differ: the bigger face would look faster
    unnormalised = one_euro_smooth(noisy * k, FPS, scale=50.0)
    assert np.abs(unnormalised - small * k).max() > 0.1


def test_jitter_drops_on_noisy_still_input_and_beats_the_old_smoother():
    _, noisy = simulate_clip("still", frames=120, size=100.0, noise=1.0, seed=5)
    raw = jitter(noisy)
    smooth = jitter(one_euro_smooth(noisy, FPS))
    assert smooth < 0.3 * raw
    assert smooth <= jitter(ema_smooth(noisy, 0.4))


def test_defaults_lag_less_than_the_old_smoother_on_moving_faces():
    for motion in ("ramp_step", "sine"):
        true, noisy = simulate_clip(motion, frames=150, size=100.0, noise=1.0, seed=7)
        one_euro = lag(true, one_euro_smooth(noisy, FPS))
        ema = lag(true, ema_smooth(noisy, 0.4))
        assert one_euro < 0.8 * ema, motion


def test_timestamps_and_frame_rate():
    _, noisy = simulate_clip("sine", frames=40, size=100.0, noise=1.0, seed=1)
    by_freq = run_filter(OneEuroFilter(freq=25.0), noisy, 100.0)
    by_time = run_filter(OneEuroFilter(freq=99.0), noisy, 100.0, times=np.arange(40) / 25.0)
    np.testing.assert_allclose(by_time, by_freq, rtol=1e-12)
    # a longer gap gives the new sample more weight
    for dt, closer in ((1 / 30, False), (1.0, True)):
        f = OneEuroFilter(beta=0.0)
        f(np.zeros(3), t=0.0)
        out = f(np.ones(3), t=dt)
        assert (out > 0.5).all() == closer
    # a timestamp that does not increase falls back to 1 / freq instead of dividing by zero
    f = OneEuroFilter(freq=30.0)
    f(np.zeros(2), t=1.0)
    assert np.isfinite(f(np.ones(2), t=1.0)).all()


def test_per_point_speed_is_rotation_invariant():
    _, noisy = simulate_clip("ramp_step", frames=60, size=100.0, noise=1.0, seed=2)
    c = np.cos(0.5), np.sin(0.5)
    rot = np.array([[c[0], -c[1]], [c[1], c[0]]])
    per_point = one_euro_smooth(noisy, FPS, scale=100.0)
    rotated = one_euro_smooth(noisy @ rot.T, FPS, scale=100.0)
    np.testing.assert_allclose(rotated, per_point @ rot.T, atol=1e-9)
    # the per-coordinate form (speed_axes=None) is not
    per_coord = one_euro_smooth(noisy, FPS, scale=100.0, speed_axes=None)
    per_coord_rot = one_euro_smooth(noisy @ rot.T, FPS, scale=100.0, speed_axes=None)
    assert np.abs(per_coord_rot - per_coord @ rot.T).max() > 1e-3


def test_bad_parameters_and_shapes_are_refused():
    for kw in ({"min_cutoff": 0}, {"beta": -1}, {"d_cutoff": float("nan")}, {"freq": 0}):
        with pytest.raises(ValueError):
            OneEuroFilter(**kw)
    f = OneEuroFilter()
    f(np.zeros((68, 2)))
    with pytest.raises(ValueError):
        f(np.zeros((5, 2)))
    with pytest.raises(ValueError):
        f(np.zeros((68, 2)), scale=0.0)


# ------------------------------------------------------------------------------------------
# Measurement helpers and tuning
# ------------------------------------------------------------------------------------------
def test_measurement_helpers():
    true, noisy = simulate_clip("sine", frames=90, fps=FPS, size=120.0, noise=2.0, seed=0)
    assert true.shape == noisy.shape == (90, 68, 2)
    assert np.std(noisy - true) == pytest.approx(2.0, rel=0.05)
    assert face_size(true[0]) == pytest.approx(120.0)
    still, _ = simulate_clip("still", frames=10)
    assert jitter(still) == 0.0 and jitter(still[:1]) == 0.0
    assert lag(true, true) == 0.0
    assert lag(true, true + [3.0, 4.0]) == pytest.approx(5.0)
    shifted = np.concatenate([np.repeat(true[:1], 3, axis=0), true[:-3]])
    assert delay(true, shifted) == pytest.approx(3.0, abs=0.05)
    assert delay(true, true) == 0.0
    with pytest.raises(ValueError):
        simulate_clip("teleport")


def test_ramp_step_clip_has_its_step():
    true, _ = simulate_clip("ramp_step", frames=90, size=100.0, speed=0.25, step=0.3)
    x = true[:, 0, 0]
    assert np.all(np.diff(x[:30]) == 0)
    assert np.diff(x[30:60]) == pytest.approx(np.full(29, 25.0 / FPS))
    assert x[60] - x[59] == pytest.approx(25.0 / FPS + 30.0)
    assert np.all(np.diff(x[60:]) == 0)


def test_ema_smooth_is_the_old_smoother():
    x = np.array([[0.0], [10.0], [10.0]])
    np.testing.assert_allclose(ema_smooth(x, 0.4), [[0.0], [4.0], [6.4]])


def test_tuning_table_and_choice():
    table = smoothing.tune_one_euro(min_cutoffs=(0.3, 1.0), betas=(0.0, 15.0), frames=60,
                                   seeds=(0,), noises=(1.0,))
    assert [r["method"] for r in table[:2]] == ["none", "ema 0.4"]
    assert len(table) == 2 + 4
    none, ema = table[:2]
    assert ema["jitter_still"] < none["jitter_still"]
    assert ema["score"] == pytest.approx(2.0)
    best = smoothing.choose_one_euro(table)
    assert best is not None and best["beats_ema"]
    assert best["jitter_still"] <= ema["jitter_still"]
    assert best["lag_moving"] < ema["lag_moving"]
    # a pure low-pass (beta 0) at 0.3 Hz lags badly: it must not be chosen
    assert (best["min_cutoff"], best["beta"]) != (0.3, 0.0)
    assert "| method |" in smoothing.format_table(table)


# ------------------------------------------------------------------------------------------
# Box helpers
# ------------------------------------------------------------------------------------------
def test_match_boxes_is_one_to_one_by_iou():
    a = [(0, 0, 10, 10), (100, 100, 10, 10), (300, 300, 10, 10)]
    b = [(101, 101, 10, 10), (1, 0, 10, 10), (0, 5, 10, 10)]
    pairs = sorted(match_boxes(a, b, 0.3))
    assert pairs == [(0, 1), (1, 0)]                 # (0, 2) overlaps less than (0, 1)
    assert match_boxes(a, b, 0.95) == []
    assert match_boxes([], b) == [] and match_boxes(a, []) == []
    assert match_boxes([(0, 0, 0, 0)], [(0, 0, 0, 0)]) == []   # empty boxes: no NaN match


def test_inside_fraction():
    assert inside_fraction((10, 10, 20, 20), 100, 100) == 1.0
    assert inside_fraction((90, 10, 20, 20), 100, 100) == pytest.approx(0.5)
    assert inside_fraction((-15, -15, 20, 20), 100, 100) == pytest.approx(0.0625)
    assert inside_fraction((200, 10, 20, 20), 100, 100) == 0.0
    assert inside_fraction((10, 10, 0, 20), 100, 100) == 0.0


# ------------------------------------------------------------------------------------------
# Tracker, with a fake pipeline
# ------------------------------------------------------------------------------------------
W, H = 640, 480
SIZE = 80.0


@dataclass
class FakeFace:
    box: np.ndarray
    keypoints: np.ndarray
    score: float | None = None
    confidence: float = 1.0
    name: str | None = None   # which synthetic face (for the tests' bookkeeping)


@dataclass(frozen=True)
class Frame:
    index: int
    shape: tuple = (H, W, 3)


def box_of(kps, margin=0.05):
    lo, hi = kps.min(0), kps.max(0)
    pad = margin * (hi - lo)
    return np.array([*(lo - pad), *(hi - lo + 2 * pad)], dtype=np.float32)


class FakePipeline:
    """Knows where each synthetic face is in each frame.

    ``scene(i)`` -> {name: (cx, cy)}. ``find_faces`` returns every face at least half inside
    the image, except those in ``miss`` ({(frame, name)}). ``refit`` returns, for each input,
    the face whose box contains the centre of the given keypoints (the nearest such), with
    the confidence ``low_conf.get((frame, name), 1.0)``; with no such face, the input put
    back with confidence 0.05 (the fit of nothing). ``noise``: px of Gaussian noise on every
    returned keypoint (seeded by frame, face and call kind).
    """

    def __init__(self, scene, miss=(), low_conf=None, noise=0.0):
        self.scene, self.miss, self.low_conf = scene, set(miss), dict(low_conf or {})
        self.noise = noise
        self.detect_frames, self.refit_frames, self.refit_inputs = [], [], []
        self.returned = []   # every face returned, in order

    def _face(self, i, name, center, kind):
        kps = face_layout(center=center, width=SIZE)
        if self.noise:
            seed = (i * 1000 + sum(map(ord, name)) * 7 + kind) % 2 ** 32
            kps = kps + np.random.default_rng(seed).normal(0, self.noise, kps.shape)
        kps = kps.astype(np.float32)
        return FakeFace(box_of(kps), kps, 0.9 if kind == 0 else None, 1.0, name)

    def find_faces(self, frame):
        i = frame.index
        self.detect_frames.append(i)
        out = []
        for name, c in self.scene(i).items():
            face = self._face(i, name, c, 0)
            if (i, name) not in self.miss and inside_fraction(face.box, W, H) >= 0.5:
                out.append(face)
        self.returned += out
        return out

    def refit(self, frame, keypoints_list):
        i = frame.index
        self.refit_frames.append(i)
        self.refit_inputs.append([np.array(k) for k in keypoints_list])
        faces = {name: self._face(i, name, c, 1) for name, c in self.scene(i).items()}
        out = []
        for kps in keypoints_list:
            c = np.asarray(kps, dtype=np.float64).mean(0)
            hits = []
            for name, f in faces.items():
                x, y, w, h = f.box
                if x <= c[0] <= x + w and y <= c[1] <= y + h:
                    hits.append((np.linalg.norm(f.keypoints.mean(0) - c), name))
            if hits:
                name = min(hits)[1]
                out.append(dataclasses.replace(faces[name],
                                               confidence=self.low_conf.get((i, name), 1.0)))
            else:
                k = np.array(kps, dtype=np.float32)
                out.append(FakeFace(box_of(k), k, None, 0.05, None))
        self.returned += out
        return out


def run(tracker, n, start=0):
    """Frames start..start+n-1: a list of {name: id} (and the faces) per frame."""
    ids, faces = [], []
    for i in range(start, start + n):
        out = tracker(Frame(i))
        faces.append(out)
        names = [f.name for f in out]
        assert len(set(names)) == len(names), f"frame {i}: one face twice: {names}"
        ids.append({f.name: f.id for f in out})
    return ids, faces


def two_faces(i):
    """A moving right and B moving down, 2 px a frame."""
    return {"A": (150 + 2 * i, 200), "B": (420, 150 + 2 * i)}


def test_ids_stay_while_two_faces_move_and_the_detector_runs_every_n_frames():
    pipe = FakePipeline(two_faces)
    tracker = FaceTracker(pipe, detect_every=5, smoothing=None)
    ids, faces = run(tracker, 23)
    assert all(frame_ids == ids[0] for frame_ids in ids)
    assert sorted(ids[0].values()) == [0, 1]
    assert pipe.detect_frames == [0, 5, 10, 15, 20]
    assert tracker.detector_runs == 5 and tracker.frames == 23
    assert tracker.refit_calls == 18 and tracker.refits == 36
    # between detections the faces follow the motion through the refits
    a = next(f for f in faces[22] if f.name == "A")
    assert a.keypoints.mean(0)[0] == pytest.approx(face_layout((194, 200), SIZE).mean(0)[0],
                                                   abs=1e-3)


def still_faces(i):
    return {"A": (150, 200), "B": (420, 150)}


def test_refits_start_from_the_raw_keypoints_and_the_output_is_smoothed():
    pipe = FakePipeline(still_faces, noise=1.5)
    tracker = FaceTracker(pipe, detect_every=4)
    ids, faces = run(tracker, 30)
    assert all(frame_ids == ids[0] for frame_ids in ids)
    by_id = {}
    for out in faces:
        for f in out:
            by_id.setdefault(f.name, []).append(f)
    # every refit got the previous frame's raw keypoints of that track, not the smoothed ones
    for frame, inputs in zip(pipe.refit_frames, pipe.refit_inputs):
        for kps in inputs:
            prev = [t for t in pipe.returned if t.name is not None
                    and np.array_equal(t.keypoints, kps)]
            assert prev, f"frame {frame}: a refit from keypoints the pipeline never returned"
    for out in faces[1:]:
        for f in out:
            assert not any(np.array_equal(f.keypoints, r.keypoints) for r in pipe.returned)
    # the faces carry the pipeline's other attributes, and the pipeline's faces are untouched
    assert all(f.name in ("A", "B") and f.confidence == 1.0 for out in faces for f in out)
    assert not any(hasattr(r, "id") for r in pipe.returned)
    # smoothing removes most of the noise: the output is steadier and nearer the truth
    a_out = np.stack([f.keypoints for f in by_id["A"]])
    a_raw = np.stack([r.keypoints for r in pipe.returned if r.name == "A"])
    assert a_raw.shape == a_out.shape == (30, 68, 2)      # one raw A per frame
    a_true = np.broadcast_to(face_layout((150, 200), SIZE), a_out.shape)
    assert jitter(a_out) < 0.3 * jitter(a_raw)
    assert lag(a_true[10:], a_out[10:]) < 0.6 * lag(a_true[10:], a_raw[10:])


def test_without_smoothing_the_output_is_the_pipelines_face_with_an_id():
    pipe = FakePipeline(two_faces, noise=1.0)
    tracker = FaceTracker(pipe, detect_every=3, smoothing=None)
    for i in range(6):
        out = tracker(Frame(i))
        last = pipe.returned[-len(out):]
        for f in out:
            raw = next(r for r in last if r.name == f.name)
            np.testing.assert_array_equal(f.keypoints, raw.keypoints)
            np.testing.assert_array_equal(f.box, raw.box)
            assert f.keypoints is not raw.keypoints
            assert f.score == raw.score and isinstance(f.id, int)


def test_a_low_confidence_refit_triggers_a_detector_run():
    pipe = FakePipeline(two_faces, low_conf={(7, "A"): 0.2})
    tracker = FaceTracker(pipe, detect_every=5, min_confidence=0.5, smoothing=None)
    ids, faces = run(tracker, 14)
    assert pipe.detect_frames == [0, 5, 7, 12]      # 7: the bad fit; then every 5 from there
    assert all(frame_ids == ids[0] for frame_ids in ids)   # the detection matched: same id
    a7 = next(f for f in faces[7] if f.name == "A")
    assert a7.score == 0.9                           # frame 7's A is the detector's face


def test_a_face_leaving_the_image_triggers_a_detector_run_and_is_not_returned():
    def scene(i):  # B walks out through the right edge, 25 px a frame
        return {"A": (150, 200), "B": (500 + 25 * i, 240)}
    pipe = FakePipeline(scene)
    tracker = FaceTracker(pipe, detect_every=10, smoothing=None)
    ids, _ = run(tracker, 9)
    # frame 6: B's refitted box (centre x 650) is less than half inside the 640-px image
    assert pipe.detect_frames == [0, 6]
    assert all("B" in frame_ids for frame_ids in ids[:6])
    assert all(set(frame_ids) == {"A"} for frame_ids in ids[6:])
    assert ids[8]["A"] == ids[0]["A"]


def scene_with_gap(gone, back, where=(520, 240)):
    """A still at (160, 240); B at ``where`` except in frames gone..back-1 (off-screen)."""
    def scene(i):
        s = {"A": (160, 240)}
        s["B"] = where if not gone <= i < back else (900, 240)
        return s
    return scene


def test_a_face_that_returns_within_the_grace_window_keeps_its_id():
    pipe = FakePipeline(scene_with_gap(10, 20))
    tracker = FaceTracker(pipe, detect_every=5, max_missed=3, smoothing=None)
    ids, _ = run(tracker, 25)
    b_id = ids[0]["B"]
    assert all(set(f) == {"A"} for f in ids[10:20])     # lost: not returned
    assert pipe.detect_frames == [0, 5, 10, 15, 20]     # 10: B's refit failed
    assert ids[20]["B"] == b_id and ids[24]["B"] == b_id  # found again at the next run
    assert tracker._next_id == 2                         # no new id was made


def test_a_face_that_returns_elsewhere_or_too_late_gets_a_new_id():
    # too late: max_missed=1 -> B dropped at the run of frame 15 (its second miss)
    pipe = FakePipeline(scene_with_gap(10, 20))
    tracker = FaceTracker(pipe, detect_every=5, max_missed=1, smoothing=None)
    ids, _ = run(tracker, 25)
    assert ids[20]["B"] == 2 != ids[0]["B"]
    # in time but far from where it left: a new face as far as the tracker can tell
    def scene(i):
        return {"A": (160, 240), "B": (520, 240) if i < 10 else (900, 240) if i < 20
                else (400, 100)}
    pipe = FakePipeline(scene)
    tracker = FaceTracker(pipe, detect_every=5, max_missed=3, smoothing=None)
    ids, _ = run(tracker, 25)
    assert ids[20]["B"] == 2


def test_a_new_face_gets_a_new_id_at_the_next_detector_run():
    def scene(i):
        s = two_faces(i)
        if i >= 7:
            s["C"] = (300, 380)
        return s
    pipe = FakePipeline(scene)
    tracker = FaceTracker(pipe, detect_every=5, smoothing=None)
    ids, _ = run(tracker, 12)
    assert all("C" not in f for f in ids[:10])
    assert ids[10]["C"] == 2 and ids[11]["C"] == 2
    assert ids[11]["A"] == ids[0]["A"] and ids[11]["B"] == ids[0]["B"]
    assert pipe.detect_frames == [0, 5, 10]


def test_ids_are_never_reused():
    def scene(i):
        s = {"A": (160, 240)}
        if i < 10 or i >= 40:
            s["B"] = (520, 240)
        if 20 <= i < 30:
            s["C"] = (350, 100)
        if i >= 45:
            s["C"] = (350, 100)
        return s
    pipe = FakePipeline(scene)
    tracker = FaceTracker(pipe, detect_every=5, max_missed=1, smoothing=None)
    ids, _ = run(tracker, 55)
    episodes = []   # (name, id) in order of first appearance
    for frame_ids in ids:
        for name, i in sorted(frame_ids.items(), key=lambda kv: kv[1]):
            if (name, i) not in episodes:
                episodes.append((name, i))
    assert episodes == [("A", 0), ("B", 1), ("C", 2), ("B", 3), ("C", 4)]
    assert [i for _, i in episodes] == sorted({i for _, i in episodes})


def test_max_missed_drops_tracks():
    pipe = FakePipeline(scene_with_gap(10, 10 ** 6))
    tracker = FaceTracker(pipe, detect_every=5, max_missed=2, smoothing=None)
    run(tracker, 10)
    assert len(tracker.tracks) == 2
    run(tracker, 6, start=10)      # runs at 10 and 15: B missed twice, kept (lost)
    b = [t for t in tracker.tracks if t.id == 1]
    assert len(b) == 1 and not b[0].visible and b[0].missed == 2
    run(tracker, 5, start=16)      # run at 20: the third miss drops it
    assert [t.id for t in tracker.tracks] == [0]
    # with max_missed=0 the first miss drops it
    pipe = FakePipeline(scene_with_gap(10, 10 ** 6))
    tracker = FaceTracker(pipe, detect_every=5, max_missed=0, smoothing=None)
    run(tracker, 11)
    assert [t.id for t in tracker.tracks] == [0]


def test_a_detector_miss_does_not_end_a_track_that_still_fits():
    pipe = FakePipeline(two_faces, miss={(5, "B")})
    tracker = FaceTracker(pipe, detect_every=5, smoothing=None)
    ids, _ = run(tracker, 11)
    assert all(frame_ids == ids[0] for frame_ids in ids)
    assert pipe.detect_frames == [0, 5, 10]
    assert pipe.refit_frames.count(5) == 1 and len(pipe.refit_inputs[4]) == 1  # only B, at 5


def test_nothing_tracked_means_the_detector_runs_every_frame():
    def scene(i):
        return {"A": (200, 200)} if i >= 3 else {}
    pipe = FakePipeline(scene)
    tracker = FaceTracker(pipe, detect_every=5, smoothing=None)
    ids, _ = run(tracker, 10)
    assert pipe.detect_frames == [0, 1, 2, 3, 8]
    assert ids[3] == {"A": 0} and ids[9] == {"A": 0}


def test_two_tracks_on_one_face_are_merged_into_the_older_id():
    def scene(i):  # B walks onto A (in front of it) and away again
        bx = max(200, 400 - 40 * i) if i < 20 else 200 + 40 * (i - 19)
        return {"A": (200, 240), "B": (min(bx, 520), 240)}
    pipe = FakePipeline(scene)
    tracker = FaceTracker(pipe, detect_every=4, smoothing=None)
    ids, _ = run(tracker, 40)
    assert ids[0] == {"A": 0, "B": 1}
    merged = [i for i, f in enumerate(ids) if len(f) == 1]
    assert merged and set(ids[merged[0]].values()) == {0}
    assert all(1 not in f.values() for f in ids[merged[0]:])   # B's id is gone for good
    assert ids[-1] == {"A": 0, "B": 2}                          # B, apart again: a new id


def test_refit_must_answer_for_every_face():
    class Short(FakePipeline):
        def refit(self, frame, keypoints_list):
            return super().refit(frame, keypoints_list)[:-1]
    tracker = FaceTracker(Short(two_faces), detect_every=5)
    tracker(Frame(0))
    with pytest.raises(ValueError, match="refit returned 1 faces for 2"):
        tracker(Frame(1))


def test_timestamps_reach_the_filters_and_reset_restarts():
    pipe = FakePipeline(two_faces, noise=1.0)
    a = FaceTracker(pipe, detect_every=5, smoothing={**DEFAULT_ONE_EURO, "freq": 30.0})
    b = FaceTracker(FakePipeline(two_faces, noise=1.0), detect_every=5,
                    smoothing={**DEFAULT_ONE_EURO, "freq": 99.0})
    for i in range(8):
        fa, fb = a(Frame(i)), b(Frame(i), t=i / 30.0)
        for x, y in zip(fa, fb):
            np.testing.assert_allclose(x.keypoints, y.keypoints, rtol=1e-6)
    a.reset()
    assert a.tracks == [] and a.detector_runs == 0
    assert [f.id for f in a(Frame(0))] == [0, 1]


def test_faces_of_other_kinds():
    """The output is a copy with ``id`` set, whatever the face class: a frozen dataclass with
    an ``id`` field, or a plain object."""
    @dataclass(frozen=True)
    class Frozen:
        box: tuple
        keypoints: np.ndarray
        score: float | None = None
        confidence: float = 1.0
        id: int | None = None

    kps = face_layout(center=(200, 200), width=SIZE)

    class Pipe:
        def __init__(self, make):
            self.make = make

        def find_faces(self, image):
            return [self.make(tuple(box_of(kps)), kps)]

        def refit(self, image, keypoints_list):
            return [self.make(tuple(box_of(kps)), kps) for _ in keypoints_list]

    for make in (lambda b, k: Frozen(b, k),
                 lambda b, k: types.SimpleNamespace(box=b, keypoints=k, score=None,
                                                    confidence=1.0)):
        tracker = FaceTracker(Pipe(make), detect_every=2)
        for _ in range(3):
            out = tracker(np.zeros((H, W, 3), np.uint8))
            assert len(out) == 1 and out[0].id == 0
            assert isinstance(out[0].box, np.ndarray) and out[0].keypoints.dtype == np.float32


def test_protocols_describe_the_fakes():
    assert isinstance(FakePipeline(two_faces), tracker.Pipeline)
    assert isinstance(FakeFace(np.zeros(4), np.zeros((68, 2))), tracker.FaceLike)
