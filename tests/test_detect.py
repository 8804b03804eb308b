"""Tests of detection and the pipeline: box geometry, Haar detection, the keypoint API with a
tiny random checkpoint (shapes, coordinate mapping, flip TTA, errors, batches); the turned-face
steps are test_turned_faces.py. The command ``fkp-detect`` is test_detect_command.py.

A randomly initialised ResNet18Keypoints(width=8) is enough here: the tests are about what the
code around the model does, not about how good the model is.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facial_keypoints.cli import detect as detect_cmd
from facial_keypoints.data import course
from facial_keypoints.detection import base, blazeface
from facial_keypoints.detection.haar import HaarFaceDetector, merge_boxes
from facial_keypoints.evaluation import evaluate
from facial_keypoints.geometry import upright_square
from facial_keypoints.images import ImageReadError
from facial_keypoints.keypoints import pipeline
from facial_keypoints.landmarks import FLIP_INDICES
from helpers_keypoints import (
    ASTRONAUT,
    ASTRONAUT_BOX,
    TINY_INPUT,
    iou,
    needs_data,
)

FLIP = list(FLIP_INDICES)


@pytest.fixture(scope="module")
def haar():
    return HaarFaceDetector()


@pytest.fixture(scope="module")
def kp(tiny_ckpt, haar):
    return pipeline.KeypointPipeline(tiny_ckpt, detector=haar)


def no_detection(image):
    raise AssertionError("the face detector ran although boxes were given")


# --------------------------------------------------------------------------------------------
# Box geometry
# --------------------------------------------------------------------------------------------
def test_crop_for_box_follows_the_calibration():
    c = base.load_calibration("haar")
    x, y, w, h = 10.0, 20.0, 100.0, 100.0
    side = 1.3 * c["size"] * w
    cx, cy = x + w / 2 + c["dx"] * w, y + h / 2 + c["dy"] * h
    np.testing.assert_allclose(base.crop_for_box([x, y, w, h], 1.3, c), [cx, cy, side, 0])


def test_crop_for_box_with_a_hand_calibration():
    cal = {"dx": 0.1, "dy": 0.2, "size": 0.5}
    # centre (0 + 50 + 10, 0 + 25 + 10) = (60, 35); side 2 * 0.5 * 100 = 100
    np.testing.assert_allclose(base.crop_for_box((0, 0, 100, 50), 2.0, cal),
                               [60, 35, 100, 0])
    # an identity calibration: a square crop centred on the box, crop_scale times its width
    ident = {"dx": 0.0, "dy": 0.0, "size": 1.0}
    np.testing.assert_allclose(base.crop_for_box((40, 60, 80, 80), 1.0, ident),
                               [80, 100, 80, 0])
    np.testing.assert_allclose(base.crop_for_box((40, 60, 80, 80), 1.5, ident),
                               [80, 100, 120, 0])
    # a face rolled by 90 degrees (clockwise): its "down" is the image's left, so the offset
    # (10 along the eye line, 10 down the face) lands at (-10, +10) from the box centre
    np.testing.assert_allclose(base.crop_for_box((0, 0, 100, 50), 2.0, cal, roll=90),
                               [50 - 10, 25 + 10, 100, 90], atol=1e-9)


def box_iou(a, b):
    return base.box_overlaps(a, b)[0][0, 0]


@pytest.mark.parametrize("a, b, expected", [
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
    ((0, 0, 10, 10), (5, 0, 10, 10), 50 / 150),
    ((0, 0, 10, 10), (2, 2, 5, 5), 25 / 100),
    ((0, 0, 10, 10), (10, 0, 10, 10), 0.0),       # touching edges
    ((0, 0, 10, 10), (30, 30, 5, 5), 0.0),
    ((0, 0, 4, 10), (2, 5, 4, 10), 2 * 5 / (40 + 40 - 10)),
])
def test_box_iou_hand_cases(a, b, expected):
    assert box_iou(a, b) == pytest.approx(expected)
    assert box_iou(b, a) == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=2, max_size=2),
       st.lists(st.floats(1, 100), min_size=2, max_size=2),
       st.lists(st.floats(-100, 100), min_size=2, max_size=2),
       st.lists(st.floats(1, 100), min_size=2, max_size=2))
def test_box_iou_properties(p1, s1, p2, s2):
    a, b = (*p1, *s1), (*p2, *s2)
    v = box_iou(a, b)
    assert 0.0 <= v <= 1.0 + 1e-12
    assert v == pytest.approx(box_iou(b, a))
    assert v == pytest.approx(iou(a, b))
    assert box_iou(a, a) == pytest.approx(1.0)


def test_merge_boxes_drops_duplicates_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 100, 100],      # a face
                      [5, 5, 100, 100],      # the same face again, better score
                      [300, 300, 80, 80],    # another face
                      [310, 305, 30, 30]])   # small box inside the other face
    kept, scores = merge_boxes(boxes, [1.0, 2.0, 3.0, 0.5])
    np.testing.assert_array_equal(kept, [[300, 300, 80, 80], [5, 5, 100, 100]])
    np.testing.assert_array_equal(scores, [3.0, 2.0])
    # two separate faces both stay, whatever their scores
    two, _ = merge_boxes(boxes[[0, 2]], [0.1, 5.0])
    assert len(two) == 2
    assert merge_boxes(np.zeros((0, 4)), [])[0].shape == (0, 4)


# --------------------------------------------------------------------------------------------
# Haar face detection
# --------------------------------------------------------------------------------------------
def test_haar_finds_the_one_face_in_the_bundled_photo(haar, astronaut):
    boxes = haar(astronaut).boxes
    assert boxes.shape == (1, 4), boxes
    x, y, w, h = boxes[0]
    # the astronaut's face: centre about (225, 115), some 100 px wide
    assert 200 < x + w / 2 < 250 and 90 < y + h / 2 < 140 and 70 < w < 130 and w == h


def test_haar_boxes_are_in_original_pixels_for_a_tiny_image(haar, astronaut):
    tiny = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)  # upscaled inside
    boxes = haar(tiny).boxes
    assert boxes.shape == (1, 4), boxes
    assert iou(boxes[0], ASTRONAUT_BOX / 4) > 0.75, boxes


def test_haar_boxes_are_in_original_pixels_for_a_big_padded_image(haar, astronaut):
    big = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_LINEAR)
    big = cv2.copyMakeBorder(big, 50, 30, 100, 20, cv2.BORDER_CONSTANT)  # downscaled inside
    expected = ASTRONAUT_BOX * 3 + [100, 50, 0, 0]
    boxes = haar(big).boxes
    assert len(boxes) >= 1
    best = max(boxes, key=lambda b: iou(b, expected))
    assert iou(best, expected) > 0.75, boxes


@pytest.mark.parametrize("kind", ["black", "noise"])
def test_haar_finds_nothing_in_blank_or_noise(haar, kind):
    if kind == "black":
        image = np.zeros((300, 400, 3), np.uint8)
    else:
        image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    found = haar(image)
    assert isinstance(found, base.Detections) and found.boxes.shape == (0, 4)


@needs_data
def test_haar_finds_the_labelled_face_in_test_frames(haar):
    names = ["James_Wolfensohn_00.jpg", "Valerie_Harper_30.jpg"]
    ds = course.dataset("test", names=names)
    assert len(ds) == 2
    for i in range(2):
        sample = ds[i]
        found = haar(sample["image"])
        assert len(found) >= 1
        crops = base.crops_for(found, haar, 1.3)
        assert evaluate.match_detection(crops, sample["keypoints"], 1.3) is not None


# --------------------------------------------------------------------------------------------
# KeypointPipeline: inputs
# --------------------------------------------------------------------------------------------
def test_detector_reads_its_checkpoint(kp):
    assert kp.size == TINY_INPUT and kp.crop_scale == 1.3
    assert (kp.kp_mean, kp.kp_std) == (TINY_INPUT / 2, TINY_INPUT / 4)


def test_get_landmarks_from_a_path(kp, astronaut):
    faces = kp.get_landmarks(str(ASTRONAUT))          # a path: read, detect, predict
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].box, ASTRONAUT_BOX)
    assert faces[0].keypoints.shape == (68, 2) and np.isfinite(faces[0].keypoints).all()
    for image in (ASTRONAUT, astronaut):              # a Path object, the RGB array
        same = kp.get_landmarks(image, boxes=[faces[0].box])
        np.testing.assert_array_equal(same[0].keypoints, faces[0].keypoints)
    assert kp.get_landmarks_from_image == kp.get_landmarks


def test_get_landmarks_from_gray_and_rgba_arrays(tiny_ckpt, astronaut):
    kp = pipeline.KeypointPipeline(tiny_ckpt, detector=no_detection)
    box = [ASTRONAUT_BOX]
    rgb = kp.get_landmarks(astronaut, boxes=box)[0].keypoints
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 77, np.uint8)])
    np.testing.assert_array_equal(kp.get_landmarks(rgba, boxes=box)[0].keypoints, rgb)
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    from_gray = kp.get_landmarks(gray, boxes=box)[0].keypoints
    np.testing.assert_array_equal(from_gray,
                                  kp.get_landmarks(np.dstack([gray] * 3), boxes=box)[0].keypoints)
    assert from_gray.shape == (68, 2) and np.isfinite(from_gray).all()
    # a float image in [0, 1] is the same picture
    as_float = kp.get_landmarks(astronaut / 255.0, boxes=box)[0].keypoints
    np.testing.assert_allclose(as_float, rgb, atol=1e-6)


def test_explicit_boxes_skip_detection(tiny_ckpt, astronaut):
    kp = pipeline.KeypointPipeline(tiny_ckpt, detector=no_detection)
    boxes = [[176.0, 65.0, 97.0, 97.0], [10.5, 300.0, 60.0, 80.0]]
    faces = kp.get_landmarks(astronaut, boxes=boxes)
    assert len(faces) == 2
    for face, box in zip(faces, boxes):
        np.testing.assert_array_equal(face.box, box)
        assert face.keypoints.shape == (68, 2) and np.isfinite(face.keypoints).all()
    # the batch gives the same as one box at a time
    np.testing.assert_allclose(kp.get_landmarks(astronaut, boxes=boxes[1:])[0].keypoints,
                               faces[1].keypoints, atol=1e-4)
    assert kp.get_landmarks(astronaut, boxes=[]) == []
    js = faces[1].to_json()
    assert js["box"] == [10.5, 300.0, 60.0, 80.0] and len(js["keypoints"]) == 68


@pytest.mark.parametrize("boxes", [
    [[0, 0, -10, 10]], [[0, 0, 10, 0]], [[1, 2, 3]], [[1, 2, 3, 4, 5]], [[np.nan, 0, 10, 10]],
    [[0, 0, 10, 10], [0, 0, 10]], "abc", [{"x": 1}],
])
def test_invalid_boxes_raise_value_error(tiny_ckpt, astronaut, boxes):
    kp = pipeline.KeypointPipeline(tiny_ckpt, detector=no_detection)
    with pytest.raises(ValueError):
        kp.get_landmarks(astronaut, boxes=boxes)


@pytest.mark.parametrize("shape", [(10, 10, 2), (0, 10, 3), (10, 0), (4, 4, 3, 1), (5,)])
def test_bad_array_shape_raises_value_error(tiny_ckpt, shape):
    kp = pipeline.KeypointPipeline(tiny_ckpt, detector=no_detection)
    with pytest.raises(ValueError):
        kp.get_landmarks(np.zeros(shape, np.uint8), boxes=[[0, 0, 5, 5]])


def test_unreadable_paths_raise_image_read_error(tiny_ckpt, tmp_path):
    kp = pipeline.KeypointPipeline(tiny_ckpt, detector=no_detection)
    with pytest.raises(ImageReadError, match="no such file"):
        kp.get_landmarks(tmp_path / "missing.jpg")
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageReadError):
        kp.get_landmarks(str(text))


# --------------------------------------------------------------------------------------------
# KeypointPipeline: coordinates
# --------------------------------------------------------------------------------------------
def test_keypoints_map_back_to_original_pixels(tiny_ckpt, astronaut):
    """The same face padded by (dx, dy), with its box moved as much: the keypoints move by
    exactly (dx, dy). One box reaches past the image border (black fill in both cases)."""
    kp = pipeline.KeypointPipeline(tiny_ckpt, detector=no_detection)
    boxes = np.array([ASTRONAUT_BOX, [-5.3, -20.2, 150.0, 150.0], [300.4, 380.7, 90.0, 90.0]])
    dx, dy = 37, 23
    padded = np.pad(astronaut, ((dy, 11), (dx, 5), (0, 0)))
    before = np.array([f.keypoints for f in kp.get_landmarks(astronaut, boxes)])
    after = np.array([f.keypoints for f in kp.get_landmarks(padded, boxes + [dx, dy, 0, 0])])
    assert before.shape == (3, 68, 2)
    np.testing.assert_allclose(after - before, np.broadcast_to([dx, dy], before.shape), atol=0.5)
    # and the keypoints are where the model says in its crop: crop pixels * side/size + corner
    cx, cy, side, _ = base.crop_for_box(boxes[0], kp.crop_scale,
                                             base.load_calibration("haar"))
    inside = (before[0] - [cx - side / 2, cy - side / 2]) * TINY_INPUT / side
    assert np.all(np.abs(inside - TINY_INPUT / 2) < 5 * TINY_INPUT)  # a sane scale, not raw


def symmetric_face_image(width=200, height=200):
    """A face-like drawing that is exactly left-right symmetric: column j == column W-1-j."""
    img = np.full((height, width), 70, np.uint8)
    cv2.ellipse(img, (width // 2, 105), (55, 72), 0, 0, 360, 190, -1)
    cv2.circle(img, (76, 92), 9, 30, -1)
    cv2.circle(img, (60, 140), 6, 120, -1)
    cv2.line(img, (80, 150), (100, 158), 40, 4)
    cv2.rectangle(img, (20, 20), (45, 60), 250, -1)
    half = width // 2
    img[:, half:] = img[:, :half][:, ::-1]
    return np.dstack([img] * 3)


def test_flip_tta_is_left_right_symmetric_on_a_symmetric_face(tiny_ckpt):
    """With flip TTA the prediction is (f(crop) + mirror(f(flipped crop))) / 2; on a symmetric
    crop that is symmetric under the pipeline's mirror: x -> size - 1 - x in the model's crop
    and the point order swapped by FLIP_INDICES. In image pixels (crop centre cx) point i
    mirrored, 2 * cx - x, is point FLIP_INDICES[i]."""
    image = symmetric_face_image()
    width = image.shape[1]
    assert np.array_equal(image, image[:, ::-1])
    plain = pipeline.KeypointPipeline(tiny_ckpt, detector=no_detection)
    tta = pipeline.KeypointPipeline(tiny_ckpt, flip_tta=True, detector=no_detection)
    crop = np.array([(width - 1) / 2, 90.0, 100.0, 0.0])   # on the image's centre line
    axis_sum = 2 * crop[0]

    def asymmetry(pts):
        return max(np.abs(pts[:, 0] + pts[FLIP, 0] - axis_sum).max(),
                   np.abs(pts[:, 1] - pts[FLIP, 1]).max())

    with_tta = tta.keypoints_for_crops(image, [crop])[0][0]
    without = plain.keypoints_for_crops(image, [crop])[0][0]
    assert asymmetry(with_tta) < 1.0
    # the random model alone is far from symmetric, so the check above is not vacuous
    assert asymmetry(without) > 3.0
    # TTA averages the plain prediction with the mirrored one
    np.testing.assert_allclose(with_tta[:, 1], (without[:, 1] + without[FLIP, 1]) / 2, atol=1.0)


def test_several_images_in_one_batch_give_what_each_gives_alone(tiny_ckpt, astronaut):
    pipe = pipeline.KeypointPipeline(tiny_ckpt)
    small = cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA)
    images = [astronaut, np.zeros((64, 80, 3), np.uint8), small, astronaut]
    together = pipe.find_faces_in(images)
    assert [len(f) for f in together] == [len(pipe.find_faces(im)) for im in images]
    assert len(together[0]) == 1 and together[1] == []
    for image, faces in zip(images, together):
        for a, b in zip(faces, pipe.find_faces(image)):
            np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
            np.testing.assert_allclose(a.box, b.box)
            assert a.score == pytest.approx(b.score)


def test_missing_detector_weights_name_the_command_and_haar_still_works(tmp_path, monkeypatch,
                                                                      capsys, tiny_ckpt):
    monkeypatch.setattr(blazeface, "BLAZEFACE_DIR", tmp_path / "nothing here")
    code = detect_cmd.main([str(ASTRONAUT), "--model", str(tiny_ckpt), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert "is missing" in line and "reinstall facial-keypoints" in line
    out = tmp_path / "haar.json"
    assert detect_cmd.main([str(ASTRONAUT), "--model", str(tiny_ckpt), "--detector", "haar",
                        "--json", str(out), "--quiet"]) == 0
    assert len(json.loads(out.read_text())["images"][0]["faces"]) == 1


def _photos_for_threads(astronaut):
    """The bundled photo turned by several angles and at several sizes: 8 different pictures."""
    out = []
    for degrees, scale in ((0, 1.0), (30, 1.0), (90, 0.7), (135, 1.3), (180, 1.0), (-60, 0.5),
                           (45, 2.0), (0, 0.35)):
        h, w = astronaut.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, scale)
        out.append(cv2.warpAffine(astronaut, m, (int(w * max(scale, 1)), int(h * max(scale, 1)))))
    return out


@pytest.mark.parametrize("detector", ["blazeface", "haar"])
def test_a_shared_pipeline_gives_every_thread_the_sequential_result(astronaut, detector):
    """One pipeline shared by 8 threads (as a web server or a thread pool shares it): each
    call gives exactly what it gives alone, over 3 rounds of 16 calls."""
    pipe = pipeline.KeypointPipeline(detector=detector)
    photos = _photos_for_threads(astronaut) * 2
    want = [pipe.get_landmarks(p) for p in photos]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            for got, expected in zip(pool.map(pipe.get_landmarks, photos), want, strict=True):
                assert len(got) == len(expected)
                for a, b in zip(got, expected):
                    np.testing.assert_array_equal(a.keypoints, b.keypoints)
                    np.testing.assert_array_equal(a.box, b.box)
                    assert (a.score, a.confidence, a.roll) == (b.score, b.confidence, b.roll)


def test_a_face_whose_first_square_was_right_is_not_refitted(astronaut):
    pipe = pipeline.KeypointPipeline()
    crops = base.crops_for(pipe.detect(astronaut), pipe.detector, pipe.crop_scale)
    first, _ = pipe.keypoints_for_crops(astronaut, crops)
    # the square around a fit is right for that fit; one moved by a tenth of its side, 10 %
    # larger or turned by 10 degrees is not
    own = np.array([upright_square(p, pipe.crop_scale) for p in first])
    right = pipe.square_was_right
    assert right(own, first).all()
    assert not right(own + [0.1 * own[0, 2], 0, 0, 0], first).any()
    assert not right(own + [0, 0, 0, 10], first).any()
    assert not right(own * [1, 1, 1.1, 1], first).any()
    calls = []
    real = pipe.model.predict
    pipe.model.predict = lambda batch: calls.append(len(batch)) or real(batch)
    try:
        pts, _ = pipe.fit(astronaut, own)                   # right: one pass
        assert calls == [1]
        np.testing.assert_array_equal(pts, pipe.keypoints_for_crops(astronaut, own)[0])
        calls.clear()
        pipe.fit(astronaut, own + [0, 0, 0, 10])            # not right: refitted
        assert calls == [1, 1]
        calls.clear()
        pipe.refit_within = None                            # every face refitted
        pipe.fit(astronaut, own)
        assert calls == [1, 1]
    finally:
        pipe.model.predict = real


def test_a_doubtful_fit_is_refitted_even_where_its_square_was_right(astronaut):
    """A fit below the confidence floor gets its second pass: the refit may lift it above the
    floor, so that only a fit still doubtful after it is tried again from turned squares."""
    pipe = pipeline.KeypointPipeline()
    crops = base.crops_for(pipe.detect(astronaut), pipe.detector, pipe.crop_scale)
    first, conf = pipe.keypoints_for_crops(astronaut, crops)
    own = np.array([upright_square(p, pipe.crop_scale) for p in first])
    assert pipe.square_was_right(own, first).all() and (conf >= pipe.confidence_floor).all()
    assert pipe.keeps_first_fit(own, first, conf).all()
    assert not pipe.keeps_first_fit(own, first, conf * 0 + pipe.confidence_floor / 2).any()
    calls = []
    real = pipe.model.predict
    pipe.model.predict = lambda batch: calls.append(len(batch)) or real(batch)
    try:
        pipe.confidence_floor = float(conf.max()) * 2        # every fit doubtful now
        pipe.retry_turns = ()
        pipe.fit(astronaut, own)
        assert calls == [1, 1]
    finally:
        pipe.model.predict = real
