"""BlazeFace detector: anchors, decoding, letterboxing, weighted NMS, the model fetch, and the
real models on the bundled photo (upright, rotated, pasted into a wide canvas)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facial_keypoints import files
from facial_keypoints.detection import base, blazeface
from facial_keypoints.detection.base import box_overlaps
from facial_keypoints.paths import BLAZEFACE_DIR, DEFAULT_PHOTO, PACKAGE_DIR
from helpers_keypoints import ROOT

PHOTO = DEFAULT_PHOTO
#: A Haar box (x, y, w, h) of the face in the bundled photo.
HAAR_BOX = (176, 65, 97, 97)


def iou_xywh(a, b) -> float:
    return float(box_overlaps(a, b)[0][0, 0])


@pytest.fixture(scope="session")
def weights():
    """The real models, shipped inside the package."""
    return BLAZEFACE_DIR



#: For the tests that need LiteRT (optional: it has no wheel for Intel macOS).
needs_litert = pytest.mark.skipif("litert" not in blazeface.installed_runtimes(),
                                  reason="ai-edge-litert is not installed")


@pytest.fixture(scope="session", params=blazeface.installed_runtimes())
def detector(weights, request):
    """The "auto" detector on each runtime installed."""
    return blazeface.BlazeFaceDetector(runtime=request.param)


@pytest.fixture(scope="session")
def photo():
    return cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)


# --- anchors and decoding (no weights needed) --------------------------------------------------

def test_anchor_counts_and_centres():
    short = blazeface.ssd_anchors(128, (8, 16, 16, 16), 1.0)
    assert short.shape == (896, 2)
    # stride 8: 16x16 cells, 2 anchors each; then stride 16: 8x8 cells, 6 anchors each
    np.testing.assert_allclose(short[0], [1 / 32, 1 / 32])
    np.testing.assert_allclose(short[1], [1 / 32, 1 / 32])
    np.testing.assert_allclose(short[2], [3 / 32, 1 / 32])  # x runs fastest
    np.testing.assert_allclose(short[511], [31 / 32, 31 / 32])
    np.testing.assert_allclose(short[512], [1 / 16, 1 / 16])
    np.testing.assert_allclose(short[517], [1 / 16, 1 / 16])
    np.testing.assert_allclose(short[518], [3 / 16, 1 / 16])
    np.testing.assert_allclose(short[-1], [15 / 16, 15 / 16])
    full = blazeface.ssd_anchors(192, (4,), 0.0)
    assert full.shape == (2304, 2)
    np.testing.assert_allclose(full[0], [1 / 96, 1 / 96])
    np.testing.assert_allclose(full[1], [3 / 96, 1 / 96])
    np.testing.assert_allclose(full[-1], [95 / 96, 95 / 96])


def test_decode_offsets_scales_and_clipped_sigmoid():
    anchors = blazeface.ssd_anchors(128, (8, 16, 16, 16), 1.0)
    raw = np.zeros((1, 896, 16), np.float32)
    raw[0, 600, :4] = [12.8, -6.4, 64, 32]          # centre +0.1, -0.05; size 0.5 x 0.25
    raw[0, 600, 4:6] = [-25.6, 0]                    # first point 0.2 left of the anchor
    logits = np.full((1, 896, 1), -1000, np.float32)  # clipped to -100 before the sigmoid
    logits[0, 600] = 1000
    with np.errstate(all="raise"):
        boxes, points, scores = blazeface.decode(raw, logits, anchors, 128)
    ax, ay = anchors[600]
    np.testing.assert_allclose(boxes[600], [ax + 0.1 - 0.25, ay - 0.05 - 0.125,
                                            ax + 0.1 + 0.25, ay - 0.05 + 0.125])
    np.testing.assert_allclose(points[600, 0], [ax - 0.2, ay])
    np.testing.assert_allclose(points[600, 1:], np.tile(anchors[600], (5, 1)))
    assert scores[600] == pytest.approx(1.0) and scores[0] == pytest.approx(1 / (1 + np.exp(100)))
    assert scores.shape == (896,) and boxes.shape == (896, 4) and points.shape == (896, 6, 2)


def test_letterbox_maps_pixels_exactly():
    img = np.zeros((60, 240, 3), np.uint8)  # wide: padded above and below
    img[20:30, 200:210] = 255               # a white square, centre (205, 25)
    canvas, (px, py, sx, sy) = blazeface.letterbox(img, 128)
    assert canvas.shape == (128, 128, 3) and canvas.dtype == np.uint8
    assert px == 0 and py == 48 and sx == pytest.approx(128 / 240) and sy == pytest.approx(32 / 60)
    weight = canvas[..., 0].astype(float)
    ys, xs = np.mgrid[:128, :128] + 0.5                     # pixel centres
    centre = [(xs * weight).sum() / weight.sum(), (ys * weight).sum() / weight.sum()]
    np.testing.assert_allclose(centre, [px + 205 * sx, py + 25 * sy], atol=0.05)
    blob = blazeface.to_blob(canvas)
    assert blob.shape == (1, 3, 128, 128) and blob.dtype == np.float32
    assert blob.min() == pytest.approx(-1.0) and blob.max() == pytest.approx(1.0)
    assert np.all(blob[0, :, :py] == -1.0) and np.all(blob[0, :, py + 32:] == -1.0)


def test_shrink_keeps_the_mapping_and_is_close_to_area_averaging():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (600, 1200, 3), dtype=np.uint8), (0, 0), 3)
    small = blazeface.shrink(img, 100, 50)                    # 12x smaller: the two-step path
    assert small.shape == (50, 100, 3)
    direct = cv2.resize(img, (100, 50), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - direct).mean() < 1.5
    img = np.zeros_like(img)
    img[300:340, 880:920] = 255                        # a white square, centre (900, 320),
    img = cv2.GaussianBlur(img, (0, 0), 8)             # smooth, so that sampling cannot shift it
    weight = blazeface.shrink(img, 100, 50)[..., 0].astype(float)
    ys, xs = np.mgrid[:50, :100] + 0.5
    centre = [(xs * weight).sum() / weight.sum(), (ys * weight).sum() / weight.sum()]
    np.testing.assert_allclose(centre, [900 / 12, 320 / 12], atol=0.1)


def test_unturn_inverts_cv2_rotate():
    canvas = np.zeros((8, 8), np.uint8)
    canvas[1, 6] = 1                     # pixel centre (6.5, 1.5) / 8
    for turns, code in blazeface.TURN_CODES.items():
        ys, xs = np.nonzero(cv2.rotate(canvas, code))
        turned = (np.array([xs[0], ys[0]]) + 0.5) / 8
        np.testing.assert_allclose(blazeface.unturn(turned, turns), [6.5 / 8, 1.5 / 8])


def test_face_roll_follows_cv2_rotate():
    # an upright layout: eyes at y=0.4, nose 0.5, mouth 0.6, tragions beside the eyes
    pts = np.array([[0.4, 0.4], [0.6, 0.4], [0.5, 0.5], [0.5, 0.6], [0.3, 0.45], [0.7, 0.45]])
    assert blazeface.face_roll(pts) == pytest.approx(0)
    # turned clockwise by a quarter turn (as cv2.ROTATE_90_CLOCKWISE): rolled by -90 degrees
    turned = np.stack([1 - pts[:, 1], pts[:, 0]], axis=1)
    assert blazeface.face_roll(turned) == pytest.approx(-90)
    np.testing.assert_allclose(blazeface.unturn(turned, 1), pts)
    assert abs(blazeface.face_roll(1 - pts)) == pytest.approx(180)


def test_turned_roll_is_the_roll_shown_in_the_turned_canvas():
    pts = np.array([[0.4, 0.4], [0.6, 0.4], [0.5, 0.5], [0.5, 0.6], [0.3, 0.45], [0.7, 0.45]])
    for turns in range(4):
        # a face upright in the canvas turned by ``turns``: its points in the upright frame
        upright_frame = blazeface.unturn(pts, turns)
        assert blazeface.turned_roll(upright_frame, turns) == pytest.approx(0, abs=1e-9)
        assert abs(blazeface.turned_roll(upright_frame, turns + 1)) == pytest.approx(90)
        assert abs(blazeface.turned_roll(upright_frame, turns + 2)) == pytest.approx(180)


def fake_models(detector, results):
    """Make ``detector.detect`` and ``candidates`` answer ``results[(model, turns)]`` =
    (score, roll as shown in that canvas) with one large centred face (when the score reaches
    the threshold), whatever the canvas."""
    def detect(key, canvas, turns=0, threshold=None):
        score, roll = results.get((key, turns), (None, 0))
        threshold = detector.score_threshold if threshold is None else threshold
        return one_face(score if score is not None and score >= threshold else None, roll, turns)

    def candidates(key, canvas, turns=0, threshold=None):
        return detect(key, canvas, turns, threshold)
    detector.detect, detector.candidates = detect, candidates


def one_face(score, roll_in_canvas, turns):
    if score is None:
        return np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros(0)
    a = np.radians(roll_in_canvas)   # face_roll: the eyes-to-mouth direction, 0 = down
    down, across = np.array([np.sin(a), np.cos(a)]), np.array([np.cos(a), -np.sin(a)])
    centre = np.array([0.5, 0.5])
    pts = [centre - 0.1 * down - 0.1 * across, centre - 0.1 * down + 0.1 * across,
           centre, centre + 0.1 * down, centre - 0.2 * across, centre + 0.2 * across]
    pts = blazeface.unturn(np.array(pts), turns)
    return np.array([[0.2, 0.2, 0.8, 0.8]]), pts[None], np.array([score])


def test_auto_keeps_a_turned_result_only_where_it_shows_the_face_upright(weights):
    detector = blazeface.BlazeFaceDetector()
    small, canvas = np.zeros((128, 128, 3), np.uint8), np.zeros((192, 192, 3), np.uint8)
    # an unsure upright face; a quarter-turned canvas scores higher, the face lying sideways
    # there (roll 100 as shown): the upright face is kept
    fake_models(detector, {("short", 0): (0.7, 20), ("short", 3): (0.85, 100)})
    _, points, scores = detector.auto(small, canvas)
    assert scores[0] == 0.7 and blazeface.face_roll(points[0]) == pytest.approx(20)
    # the same score with the face upright in that canvas: the turned result wins
    fake_models(detector, {("short", 0): (0.7, 20), ("short", 3): (0.85, 10)})
    _, points, scores = detector.auto(small, canvas)
    assert scores[0] == 0.85 and blazeface.turned_roll(points[0], 3) == pytest.approx(10)


def test_auto_searches_turned_images_for_nothing_only_on_a_hint(weights):
    small, canvas = np.zeros((128, 128, 3), np.uint8), np.zeros((192, 192, 3), np.uint8)
    upside_down = {("short", 2): (0.9, 0)}          # only the half-turned canvas shows a face
    for hint, faces in ((0.1, 0), (0.0, 1)):
        detector = blazeface.BlazeFaceDetector(turned_hint=hint)
        fake_models(detector, upside_down)          # no candidate at all upright
        assert len(detector.auto(small, canvas)[2]) == faces
    detector = blazeface.BlazeFaceDetector(turned_hint=0.1)
    fake_models(detector, {**upside_down, ("full", 0): (0.2, 0)})   # a weak hint upright:
    assert detector.auto(small, canvas)[2].tolist() == [0.9]       # searched, found


def test_weighted_nms_merges_overlaps_and_keeps_distant_boxes():
    boxes = np.array([[1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    points = np.stack([np.full((6, 2), v) for v in (1.0, 0.0, 55.0)])
    scores = np.array([0.6, 0.9, 0.7])
    out_boxes, out_points, out_scores = blazeface.weighted_nms(boxes, points, scores, 0.3)
    assert len(out_scores) == 2
    w = np.array([0.9, 0.6]) / 1.5
    np.testing.assert_allclose(out_boxes[0], w @ boxes[[1, 0]])  # (0.4, 0.4, 10.4, 10.4)
    np.testing.assert_allclose(out_points[0], np.full((6, 2), 0.4))
    np.testing.assert_allclose(out_boxes[1], boxes[2])
    np.testing.assert_allclose(out_points[1], points[2])
    np.testing.assert_allclose(out_scores, [0.9, 0.7])
    # below the IoU threshold nothing merges
    assert len(blazeface.weighted_nms(boxes, points, scores, 0.9)[2]) == 3
    empty = blazeface.weighted_nms(np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros(0))
    assert [a.shape for a in empty] == [(0, 4), (0, 6, 2), (0,)]


# --- fetching the models ---------------------------------------------------------------------

def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_one_line(err, *words):
    msg = str(err.value)
    assert "\n" not in msg
    for word in words:
        assert word in msg


@pytest.mark.parametrize("state", ["missing", "damaged"])
def test_detector_without_good_weights_names_the_command(tmp_path, state):
    if state == "damaged":
        for name in blazeface.MODEL_SHA256:
            (tmp_path / name).write_bytes(b"\0" * 100)
    with pytest.raises(base.DetectorWeightsError) as err:
        blazeface.BlazeFaceDetector("short", weights_dir=tmp_path)
    assert_one_line(err, state, "reinstall facial-keypoints")


# --- the real models --------------------------------------------------------------------------

def test_the_package_ships_both_models_with_their_licence(weights):
    assert weights.is_relative_to(PACKAGE_DIR)
    for name, digest in blazeface.MODEL_SHA256.items():
        assert files.file_sha256(weights / name) == digest
    assert "Apache License" in (weights / "LICENSE").read_text()


def check_one_face(found, box=HAAR_BOX):
    assert len(found) == 1
    assert found.boxes.shape == (1, 4) and found.points.shape == (1, 6, 2)
    assert found.boxes.dtype == np.float64
    assert iou_xywh(found.boxes[0], box) > 0.4
    x, y, w, h = found.boxes[0]
    eyes = found.points[0, :2]
    assert np.all((eyes >= [x, y]) & (eyes <= [x + w, y + h]))
    assert 0.5 < found.scores[0] <= 1.0


@pytest.mark.parametrize("model", ["short", "full", "auto"])
def test_bundled_photo_one_face_right_eye_on_image_left(weights, photo, model):
    found = blazeface.BlazeFaceDetector(model)(photo)
    check_one_face(found)
    right_eye, left_eye, nose, mouth = found.points[0, :4]
    assert right_eye[0] < left_eye[0]                 # the subject's right eye: image left
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]


def test_grayscale_input(detector, photo):
    check_one_face(detector(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)))


@pytest.mark.parametrize("code", [cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180,
                                  cv2.ROTATE_90_COUNTERCLOCKWISE])
def test_rotated_photo_points_rotate_with_it(detector, photo, code):
    upright = detector(photo)
    found = detector(cv2.rotate(photo, code))
    assert len(found) == 1
    h, w = photo.shape[:2]
    # where the upright points land in the rotated image (continuous pixel coordinates)
    x, y = upright.points[0, :, 0], upright.points[0, :, 1]
    expected = {cv2.ROTATE_90_CLOCKWISE: (h - y, x), cv2.ROTATE_180: (w - x, h - y),
                cv2.ROTATE_90_COUNTERCLOCKWISE: (y, w - x)}[code]
    expected = np.stack(expected, axis=1)
    size = upright.boxes[0, 2]
    errors = np.linalg.norm(found.points[0][:, None] - expected[None], axis=2)  # found x expected
    assert errors.diagonal().max() < 0.1 * size
    assert np.all(errors.argmin(axis=1) == np.arange(6))  # each point nearest its own place


def test_face_pasted_into_a_wide_canvas(detector, photo):
    face = photo[30:250, 115:335]                        # 220 x 220 around the face
    canvas = np.full((300, 1000, 3), 90, np.uint8)       # wide: letterboxed top and bottom
    canvas[60:280, 650:870] = face
    found = detector(canvas)
    assert len(found) == 1
    box = (HAAR_BOX[0] - 115 + 650, HAAR_BOX[1] - 30 + 60, HAAR_BOX[2], HAAR_BOX[3])
    assert iou_xywh(found.boxes[0], box) > 0.4
    expected = detector(photo).points[0] - [115, 30] + [650, 60]
    assert np.abs(found.points[0] - expected).max() < 0.15 * box[2]


def test_full_range_finds_a_small_face_that_short_range_misses(weights, photo):
    canvas = np.full((960, 1280, 3), 80, np.uint8)
    canvas[224:736, 384:896] = photo                 # face about 97 px: 7.6 % of the width
    assert len(blazeface.BlazeFaceDetector("short")(canvas)) == 0
    found = blazeface.BlazeFaceDetector()(canvas)
    check_one_face(found, (HAAR_BOX[0] + 384, HAAR_BOX[1] + 224, HAAR_BOX[2], HAAR_BOX[3]))


def test_other_image_layouts(detector, photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    check_one_face(detector(rgba))
    check_one_face(detector(photo[..., :1]))          # (H, W, 1) grayscale
    with pytest.raises(ValueError):
        detector(photo.astype(np.float32))
    with pytest.raises(ValueError):
        detector(np.zeros((0, 5, 3), np.uint8))


def test_black_image_gives_empty_detections(detector):
    found = detector(np.zeros((240, 320, 3), np.uint8))
    assert len(found) == 0
    assert found.boxes.shape == (0, 4) and found.scores.shape == (0,)
    assert found.points.shape == (0, 6, 2)
    assert found.boxes.dtype == np.float64
    empty = base.Detections.empty(points=6)
    assert (empty.boxes.shape, empty.scores.shape, empty.points.shape) == \
        ((0, 4), (0,), (0, 6, 2))


def test_detector_name_and_bad_model(weights):
    assert blazeface.BlazeFaceDetector("short").name == "blazeface"
    with pytest.raises(ValueError):
        blazeface.BlazeFaceDetector("medium")
    with pytest.raises(ValueError, match="runtime"):
        blazeface.BlazeFaceDetector(runtime="tensorflow")


@needs_litert
def test_runtimes_give_the_same_faces(weights, photo):
    """LiteRT and OpenCV's dnn run the same files: the same faces, upright and turned, on
    the bundled photo, a small face in a large canvas and a picture with nothing in it."""
    litert, opencv = (blazeface.BlazeFaceDetector(runtime=r) for r in ("litert", "opencv"))
    assert (litert.runtime, opencv.runtime) == ("litert", "opencv")
    small = np.full((960, 1280, 3), 80, np.uint8)
    small[224:736, 384:896] = photo
    pictures = [photo, cv2.rotate(photo, cv2.ROTATE_180), small, np.zeros((240, 320, 3), np.uint8)]
    for picture in pictures:
        a, b = litert(picture), opencv(picture)
        assert len(a) == len(b)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)      # pixels
        np.testing.assert_allclose(a.points, b.points, atol=0.05)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
    assert [len(litert(p)) for p in pictures] == [1, 1, 1, 0]


def test_without_litert_opencv_runs_and_asking_for_litert_says_what_to_install(
        weights, photo, monkeypatch):
    monkeypatch.setattr(blazeface, "Interpreter", None)                 # as where it has no wheel
    assert blazeface.installed_runtimes() == ("opencv",) and blazeface.default_runtime() == "opencv"
    detector = blazeface.BlazeFaceDetector()
    assert detector.runtime == "opencv"
    check_one_face(detector(photo))
    with pytest.raises(ValueError, match="pip install ai-edge-litert"):
        blazeface.BlazeFaceDetector(runtime="litert")


def test_quiet_native_stderr_silences_file_descriptor_2_inside_only(capfd):
    os.write(2, b"before\n")
    with files.quiet_native_stderr():
        os.write(2, b"hidden\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"


@needs_litert
def test_litert_starts_without_a_notice(weights):
    """LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." once per
    process (from native code): a fresh process shows that nothing reaches the user."""
    code = ("from facial_keypoints.detection import blazeface; "
            "print(blazeface.BlazeFaceDetector(runtime='litert').runtime)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "litert\n", "")


def test_threads_follow_opencv_unless_given(weights):
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        assert blazeface.BlazeFaceDetector("short").threads == 1
        assert blazeface.BlazeFaceDetector("short", threads=2).threads == 2
    finally:
        cv2.setNumThreads(threads)
