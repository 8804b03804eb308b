"""Tests of evaluate.py: the metrics on hand-made cases with known answers, and the rule that
matches a detected face box to a labelled face."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import dataset_names, draw_dots, face_layout, make_image_file, write_keypoints_csv
from facial_keypoints import geometry, landmarks
from facial_keypoints.cli import evaluate as evaluate_cmd
from facial_keypoints.data import course, fetch, w300
from facial_keypoints.detection import base
from facial_keypoints.evaluation import evaluate, metrics
from facial_keypoints.geometry import upright_square
from facial_keypoints.keypoints import pipeline
from facial_keypoints.landmarks import REGIONS
from facial_keypoints.training import ship
from helpers_keypoints import make_tiny_checkpoint, needs_300w, needs_data, random_face

D = 40.0  # outer-eye-corner distance of the synthetic faces


@pytest.fixture
def gt():
    """Three faces, each with interocular distance D (different layouts)."""
    rng = np.random.default_rng(0)
    return np.stack([random_face(rng, interocular=D, left=20.0 + 10 * k) for k in range(3)])


# --------------------------------------------------------------------------------------------
# NME, point errors, summary
# --------------------------------------------------------------------------------------------
def test_interocular_is_outer_eye_corner_distance(gt):
    np.testing.assert_allclose(metrics.interocular(gt), [D, D, D])
    moved = gt.copy()
    moved[1, landmarks.LEFT_EYE_OUTER] += [0, 30]  # 40 across, 30 down -> 50
    np.testing.assert_allclose(metrics.interocular(moved), [D, 50.0, D])


def test_perfect_prediction(gt):
    m = metrics.summarize(gt.copy(), gt)
    assert m["nme_mean"] == 0 and m["nme_median"] == 0 and m["rmse_px"] == 0
    assert m["auc@8"] == pytest.approx(1.0, abs=1e-9)
    assert m["fr@8"] == 0
    assert m["faces"] == m["faces_found"] == 3 and m["found_rate"] == 1
    for name in REGIONS:
        assert m[f"nme_{name}"] == 0


@pytest.mark.parametrize("shift", [(3.0, 4.0), (-1.2, 0.0), (0.0, 2.0)])
def test_known_shift_gives_nme_d_over_D(gt, shift):
    d = math.hypot(*shift)
    pred = gt + np.asarray(shift)
    np.testing.assert_allclose(metrics.point_errors(pred, gt), np.full((3, 68), d / D))
    np.testing.assert_allclose(metrics.nme(pred, gt), [d / D] * 3)
    m = metrics.summarize(pred, gt)
    assert m["nme_mean"] == pytest.approx(d / D)
    assert m["nme_median"] == pytest.approx(d / D)
    assert m["rmse_px"] == pytest.approx(d)
    for name in REGIONS:
        assert m[f"nme_{name}"] == pytest.approx(d / D)
    failed = d / D > metrics.FAIL_THRESHOLD
    assert m["fr@8"] == (1.0 if failed else 0.0)
    # every face has the same NME: the CED is a step at d/D, its area 1 - (d/D)/8 % (or 0)
    assert m["auc@8"] == pytest.approx(max(0.0, 1 - (d / D) / metrics.FAIL_THRESHOLD),
                                       abs=2e-3)


def test_normaliser_comes_from_ground_truth_not_prediction(gt):
    """Moving only the predicted left eye corner outward by d: one point off by d, NME d/(68 D)
    (a normaliser taken from the prediction would give d/(68 (D + d)))."""
    pred = gt.copy()
    pred[:, landmarks.LEFT_EYE_OUTER, 0] += 8.0
    np.testing.assert_allclose(metrics.nme(pred, gt), [8.0 / (68 * D)] * 3)


def test_different_interocular_distances_per_face():
    rng = np.random.default_rng(3)
    gt = np.stack([random_face(rng, interocular=40.0), random_face(rng, interocular=100.0)])
    pred = gt + [2.0, 0.0]
    np.testing.assert_allclose(metrics.nme(pred, gt), [0.05, 0.02])
    m = metrics.summarize(pred, gt)
    assert m["nme_mean"] == pytest.approx(0.035)
    assert m["nme_median"] == pytest.approx(0.035)
    # CED: 0 below 2 %, 1/2 from 2 % to 5 %, 1 from 5 % to 8 % -> area (0.5*3 + 3) / 8
    assert m["auc@8"] == pytest.approx((0.5 * 0.03 + 0.03) / 0.08, abs=2e-3)
    assert m["fr@8"] == 0


def test_shift_of_mouth_only_changes_only_mouth_nme(gt):
    rng = np.random.default_rng(1)
    mouth = list(REGIONS["mouth"])
    base = gt + rng.normal(0, 1.5, gt.shape)
    base[:, mouth] = gt[:, mouth]                 # mouth exact, everything else a bit off
    shifted = base.copy()
    shifted[:, mouth] += [0.0, -6.0]              # mouth 6 px up
    before, after = metrics.summarize(base, gt), metrics.summarize(shifted, gt)
    assert before["nme_mouth"] == 0
    assert after["nme_mouth"] == pytest.approx(6.0 / D)
    for name in REGIONS:
        if name != "mouth":
            assert after[f"nme_{name}"] == before[f"nme_{name}"], name
    assert after["nme_mean"] - before["nme_mean"] == pytest.approx(len(mouth) / 68 * 6.0 / D)


def test_rmse_is_root_mean_square_of_point_distances(gt):
    pred = gt.copy()
    pred[:, :34, 0] += 6.0                        # half the points 6 px off, half exact
    m = metrics.summarize(pred, gt)
    assert m["rmse_px"] == pytest.approx(math.sqrt(18.0))   # not the mean distance, 3
    assert m["nme_mean"] == pytest.approx(3.0 / D)


def test_missed_face_is_a_failure_but_not_in_the_means(gt):
    pred = gt + [1.0, 0.0]                        # NME 2.5 % for the faces found
    pred[1] = np.nan                              # face 1 missed by the detector
    assert np.isinf(metrics.nme(pred, gt)[1])
    m = metrics.summarize(pred, gt)
    assert m["faces"] == 3 and m["faces_found"] == 2
    assert m["found_rate"] == pytest.approx(2 / 3)
    assert m["fr@8"] == pytest.approx(1 / 3)
    assert m["nme_mean"] == pytest.approx(1.0 / D)          # the missed face is left out
    assert m["nme_median"] == pytest.approx(1.0 / D)
    assert m["rmse_px"] == pytest.approx(1.0)
    assert all(np.isfinite(m[f"nme_{name}"]) for name in REGIONS)
    # CED reaches at most 2/3: area = 2/3 * (1 - 2.5 %/8 %)
    assert m["auc@8"] == pytest.approx(2 / 3 * (1 - 0.025 / 0.08), abs=2e-3)


def test_all_faces_missed(gt):
    m = metrics.summarize(np.full_like(gt, np.nan), gt)
    assert m["faces_found"] == 0 and m["fr@8"] == 1.0 and m["auc@8"] == 0.0
    assert math.isnan(m["nme_mean"]) and math.isnan(m["rmse_px"])


def test_point_errors_rejects_mismatched_shapes(gt):
    with pytest.raises(ValueError):
        metrics.point_errors(gt[:2], gt)
    with pytest.raises(ValueError):
        metrics.point_errors(gt.reshape(3, -1), gt.reshape(3, -1))


@settings(max_examples=40, deadline=None)
@given(dx=st.floats(-500, 500), dy=st.floats(-500, 500), scale=st.floats(0.1, 20))
def test_nme_is_invariant_to_moving_and_scaling_the_whole_image(dx, dy, scale):
    rng = np.random.default_rng(7)
    gt = random_face(rng)[None]
    pred = gt + rng.normal(0, 2.0, gt.shape)
    moved = lambda a: a * scale + [dx, dy]  # noqa: E731
    np.testing.assert_allclose(metrics.nme(moved(pred), moved(gt)), metrics.nme(pred, gt),
                               rtol=1e-6)


# --------------------------------------------------------------------------------------------
# CED area and failure rate
# --------------------------------------------------------------------------------------------
def test_ced_auc_extremes():
    assert metrics.ced_auc(np.zeros(10)) == pytest.approx(1.0)
    assert metrics.ced_auc(np.full(10, 0.081)) == 0.0
    assert metrics.ced_auc([0.09, 0.5, np.inf]) == 0.0
    assert metrics.ced_auc([0.0, np.inf]) == pytest.approx(0.5)


@pytest.mark.parametrize("top, expected", [(0.08, 0.5), (0.16, 0.25), (0.04, 0.75)])
def test_ced_auc_of_uniform_errors(top, expected):
    """NMEs uniform on [0, top]: the CED is x / top (capped at 1), its area known."""
    nmes = np.linspace(0, top, 2001)
    assert metrics.ced_auc(nmes) == pytest.approx(expected, abs=2e-3)


def test_failure_rate_threshold_is_strict():
    assert metrics.failure_rate([0.08, 0.0801, 0.02, np.inf]) == pytest.approx(0.5)
    assert metrics.failure_rate([0.1, 0.2], threshold=0.15) == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------
# Matching a detected box to the labelled face
# --------------------------------------------------------------------------------------------
CAL = {"dx": 0.0032, "dy": 0.1591, "size": 0.8714}   # a detector's calibration (Haar's)
CROP_SCALE = 1.3


def box_for_crop(cx, cy, side, crop_scale=CROP_SCALE, cal=CAL):
    """The upright face box that detectors.crop_for_box turns into the crop centred at (cx, cy)."""
    w = side / (crop_scale * cal["size"])
    return np.array([cx - w / 2 - cal["dx"] * w, cy - w / 2 - cal["dy"] * w, w, w])


def crop(cx, cy, side, angle=0.0):
    return np.array([cx, cy, side, angle])


@pytest.fixture
def face():
    pts = random_face(np.random.default_rng(5), left=150.0, eye_y=120.0, interocular=60.0)
    cx, cy, side, _ = upright_square(pts, CROP_SCALE)
    return pts, np.array([cx, cy]), side


def test_box_for_labelled_crop_maps_back_onto_it(face):
    pts, (cx, cy), side = face
    box = box_for_crop(cx, cy, side)
    np.testing.assert_allclose(base.crop_for_box(box, CROP_SCALE, CAL), [cx, cy, side, 0])
    assert evaluate.match_detection([base.crop_for_box(box, CROP_SCALE, CAL)], pts,
                                    CROP_SCALE) == 0


def test_far_or_wrong_size_crop_does_not_match(face):
    pts, (cx, cy), side = face
    assert evaluate.match_detection(np.zeros((0, 4)), pts, CROP_SCALE) is None
    for bad in (crop(cx + 2 * side, cy, side), crop(cx, cy + 0.4 * side, side),
                crop(cx, cy, 1.7 * side), crop(cx, cy, side / 1.7)):
        assert evaluate.match_detection([bad], pts, CROP_SCALE) is None, bad
    # a little off in place or size still matches, at any angle
    near = crop(cx + 0.1 * side, cy - 0.05 * side, 1.3 * side, 40.0)
    assert evaluate.match_detection([near], pts, CROP_SCALE) == 0


def test_the_closest_of_several_crops_is_chosen(face):
    pts, (cx, cy), side = face
    crops = np.stack([crop(cx + 2 * side, cy, side),          # another face
                      crop(cx + 0.15 * side, cy, side),       # close, not closest
                      crop(cx, cy, 1.7 * side),               # centred, wrong size
                      crop(cx + 0.02 * side, cy, side)])      # the face
    assert evaluate.match_detection(crops, pts, CROP_SCALE) == 3
    assert evaluate.match_detection(crops[:3], pts, CROP_SCALE) == 1
    assert evaluate.match_detection(crops[[0, 2]], pts, CROP_SCALE) is None


def test_rotated_turns_the_labels_with_the_image():
    pts = face_layout(center=(60, 40), width=50)
    image = draw_dots(pts, shape=(90, 130), radius=2.5)
    for degrees in (30, -90, 180):
        turned, turned_pts = evaluate.rotated(image, pts, degrees)
        # the whole picture fits: every dot's brightness is there, centred on its label
        assert float(turned.sum()) == pytest.approx(float(image.sum()), rel=0.02)
        x, y = np.round(turned_pts[36]).astype(int)
        assert turned[y - 1:y + 2, x - 1:x + 2].max() > 100
        assert geometry.eye_roll(turned_pts) == pytest.approx(
            (geometry.eye_roll(pts) + degrees + 180) % 360 - 180, abs=1e-6)


# --------------------------------------------------------------------------------------------
# The protocols, end to end on two test frames (tiny random model: only the bookkeeping)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("eval_ckpt") / "tiny.pt")
    return pipeline.KeypointPipeline(path)


@needs_data
def test_evaluate_crop_protocol(tiny_detector):
    summary, details = evaluate.evaluate(tiny_detector, "test", "crop", subset=2, progress=False)
    assert details["pred"].shape == details["gt"].shape == (2, 68, 2)
    assert np.isfinite(details["pred"]).all()
    assert summary["faces"] == summary["faces_found"] == 2 and summary["protocol"] == "crop"
    assert summary["nme_mean"] == pytest.approx(
        metrics.nme(details["pred"], details["gt"]).mean())
    assert len(details["files"]) == 2


@needs_data
def test_evaluate_pipeline_counts_missed_faces_as_failures(tiny_detector, monkeypatch):
    monkeypatch.setattr(tiny_detector, "detector", lambda image: np.zeros((0, 4)))
    summary, details = evaluate.evaluate(tiny_detector, "test", "pipeline", subset=2,
                                         progress=False)
    assert np.isnan(details["pred"]).all()
    assert summary["faces_found"] == 0 and summary["fr@8"] == 1.0
    assert summary["extra_detections"] == 0


@needs_300w
def test_evaluate_on_the_300w_crops_and_only_the_named_files(tiny_detector):
    names = w300.dataset_300w().filenames[5:8]
    summary, details = evaluate.evaluate(tiny_detector, "300w", "crop", names=names,
                                         progress=False)
    assert summary["faces"] == 3 and details["files"] == names
    assert details["gt"].shape == (3, 68, 2)


# --------------------------------------------------------------------------------------------
# ship.measure_bias: the offsets subtracted from every shipped prediction
# --------------------------------------------------------------------------------------------
class OffsetModel:
    """A stand-in for the pipeline whose 'model' predicts every face's true keypoints plus a
    known offset per keypoint (``plain``), and on mirrored crops the mirrored truth plus
    ``mirrored``; it records which faces it was shown."""

    markups, markup = ["course"], "course"

    def __init__(self, truth, train_config, size=64, crop_scale=1.3, seed=0):
        rng = np.random.default_rng(seed)
        self.truth, self.size, self.crop_scale = truth, size, crop_scale
        self.meta = {"train_config": train_config}
        self.plain = rng.normal(0, 2, (68, 2))
        self.mirrored = rng.normal(0, 2, (68, 2))
        self.seen = []

    def set_markup(self, markup):
        assert markup == "course"

    def crop_predictions(self, image, crops, mirrored=False):
        name, keypoints = self.truth[image.tobytes()]
        self.seen.append(name)
        _, gt = geometry.warp_face(image, crops[0], self.size, keypoints)
        flipped = np.c_[self.size - 1 - gt[:, 0], gt[:, 1]]
        return (gt + self.plain)[None], (flipped + self.mirrored)[None], np.array([0.5])


@pytest.fixture
def course_layout(tmp_path):
    """A data folder in the course layout: six people, three frames each, random faces."""
    names = dataset_names()
    folder = tmp_path / "training"
    folder.mkdir()
    rng = np.random.default_rng(3)
    points = [face_layout(center=(60, 60), width=60) + rng.normal(0, 1, (68, 2)) for _ in names]
    for i, name in enumerate(names):
        make_image_file(folder / name, seed=i, size=(120, 120))
    write_keypoints_csv(tmp_path / course.SPLITS["train"][0], names, points)
    return tmp_path


def test_measure_bias_finds_a_known_offset_on_the_models_own_validation_people(course_layout):
    config = {"val_fraction": 0.34, "seed": 1, "data_dir": str(course_layout)}
    ds = course.dataset("train", data_dir=course_layout)
    truth = {ds[i]["image"].tobytes(): (ds.filenames[i], ds[i]["keypoints"])
             for i in range(len(ds))}
    model = OffsetModel(truth, config)
    bias = ship.measure_bias(model)
    np.testing.assert_allclose(bias["plain"], model.plain, atol=2e-3)   # rounded to 0.001
    np.testing.assert_allclose(bias["mirrored"], model.mirrored, atol=2e-3)
    _, val_names = course.split_by_person(ds.filenames, 0.34, 1)
    assert sorted(model.seen) == sorted(val_names) and bias["faces"] == len(val_names)
    assert "seed 1" in bias["split"] and np.all(bias["confidence"] == 0.5)
    # another seed holds out other people: the split really comes from the checkpoint
    assert course.split_by_person(ds.filenames, 0.34, 0)[1] != val_names


# --------------------------------------------------------------------------------------------
# ship.compare_heads: the two mark-up heads on the same faces
# --------------------------------------------------------------------------------------------
def test_compare_heads_measures_how_far_apart_the_heads_put_each_region(monkeypatch):
    rng = np.random.default_rng(0)
    gt = np.stack([random_face(rng, interocular=40.0) for _ in range(5)])
    shift = np.zeros((68, 2))
    shift[landmarks.REGIONS["jaw"], 0] = 4.0            # the 300-W head: jaw 4 px to the right
    calls = []

    def fake_evaluate(pipe, split, protocol, names=None, markup=None, progress=True):
        calls.append((split, protocol, tuple(names or ()), markup))
        pred = gt + (shift if markup == "300w" else 0)
        err = float(markup == "300w")
        return {"nme_mean": err, **{f"nme_{k}": err for k in REGIONS}}, {"pred": pred, "gt": gt}

    monkeypatch.setattr(ship, "evaluate", fake_evaluate)
    pipe = SimpleNamespace(markups=["course", "300w"])
    found = ship.compare_heads(pipe, {"set A": ("300w_test", None), "set B": ("test", ["a"])})
    assert calls == [("300w_test", "crop", (), "course"), ("300w_test", "crop", (), "300w"),
                     ("test", "crop", ("a",), "course"), ("test", "crop", ("a",), "300w")]
    apart = found["set A"]["apart"]
    assert apart["nme_jaw"] == pytest.approx(4.0 / 40.0)
    assert apart["nme_mean"] == pytest.approx(0.1 * 17 / 68)
    assert all(apart[f"nme_{k}"] == 0 for k in ("brows", "nose", "eyes", "mouth"))
    assert found["set B"]["300w"]["nme_mean"] == 1.0          # each head's own summary is kept
    table = ship._heads_table(found)
    assert "| set A | the two heads apart | 2.50 | 10.00 | 0.00 |" in table
    assert ship.compare_heads(SimpleNamespace(markups=["course"]), {"x": ("test", None)}) == {}


def test_evaluate_command_refuses_a_head_the_model_does_not_have(tmp_path, capsys):
    model = make_tiny_checkpoint(tmp_path / "one_head.pt")
    with pytest.raises(SystemExit) as e:
        evaluate_cmd.main(["--model", str(model), "--markup", "300w", "--detector", "haar"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--markup 300w: " in err and "has no such head; it has course" in err


def test_whole_photos_with_several_faces_are_a_split(tmp_path, monkeypatch):
    """``300w_afw_photos``: one row per labelled face, several rows for one group photo; each
    face is a sample of its own, on the whole photo."""
    folder = tmp_path / "300w_afw_photos"
    (folder / "images").mkdir(parents=True)
    make_image_file(folder / "images" / "afw_1.jpg", size=(200, 120))
    faces = [face_layout(center=(50, 60), width=40), face_layout(center=(150, 60), width=40)]
    write_keypoints_csv(folder / "keypoints.csv", ["afw_1.jpg", "afw_1.jpg"], faces)
    (folder / ".complete").write_text("test\n")
    monkeypatch.setattr(w300, "DATA_DIR", tmp_path)
    monkeypatch.setattr(fetch, "DATA_DIR", tmp_path)
    ds = evaluate.split_dataset("300w_afw_photos")
    assert len(ds) == 2
    a, b = ds[0], ds[1]
    assert a["image"].shape[:2] == (120, 200) and np.array_equal(a["image"], b["image"])
    np.testing.assert_allclose(a["keypoints"], faces[0], atol=1e-3)
    np.testing.assert_allclose(b["keypoints"], faces[1], atol=1e-3)
