"""Tests of benchmark.py: the dlib side (adapter, face matching), the side-by-side comparison's
bookkeeping with a system whose answers are known, and the tables it writes."""
from __future__ import annotations

import importlib.util
import json
import os
import types

import cv2
import numpy as np
import pytest

from benchmarks import benchmark, common, dlib_reference, refit, speedups
from facial_keypoints import geometry, images, paths
from facial_keypoints.data import course
from facial_keypoints.detection import base
from facial_keypoints.evaluation.metrics import nme
from facial_keypoints.keypoints import pipeline
from helpers_keypoints import ASTRONAUT, needs_300w, needs_data

needs_dlib = pytest.mark.skipif(importlib.util.find_spec("dlib") is None or
                                importlib.util.find_spec("face_recognition_models") is None,
                                reason="dlib not installed: "
                                       "pip install -r requirements-benchmark.txt")


@needs_dlib
def test_dlib_finds_the_astronaut_and_agrees_roughly_with_the_shipped_model():
    dlib_pipe = benchmark.DlibPipeline(upsample=0)
    image = images.load_image(ASTRONAUT)
    gray = image.mean(axis=2).astype(np.uint8)
    rects = dlib_pipe.detect(gray)
    ours = pipeline.KeypointPipeline().get_landmarks(image)[0].keypoints
    # dlib also fires on the mission patch (a second box); the face is the one on our face
    j = benchmark._dlib_match([dlib_pipe.box(r) for r in rects], ours)
    assert j is not None
    theirs = dlib_pipe.keypoints(gray, rects[j])
    assert theirs.shape == (68, 2)
    # two different tools on one clear face: same points, within 10 % of the eye distance
    assert nme(ours[None], theirs[None])[0] < 0.10


def test_dlib_match_hand_cases():
    gt = np.array([[100, 100], [200, 100], [150, 200]] + [[150, 150]] * 65, dtype=float)
    # keypoint box 100..200 x 100..200: centre (150, 150), side 100
    assert benchmark._dlib_match([], gt) is None
    assert benchmark._dlib_match([[105, 105, 90, 90]], gt) == 0
    assert benchmark._dlib_match([[400, 400, 90, 90], [110, 100, 95, 95]], gt) == 1
    assert benchmark._dlib_match([[100, 100, 30, 30]], gt) is None     # too small, off centre
    assert benchmark._dlib_match([[0, 0, 300, 300]], gt) is None       # far too big


CAL = {"dx": 0.01, "dy": 0.15, "size": 0.9}


class KnownAnswers:
    """A 'pipeline' that finds every face but the listed ones and answers with the labels
    shifted by ``shift`` px: the comparison must report exactly that."""

    crop_scale = 1.3
    markups, markup = ["course"], "course"

    def __init__(self, dataset, missed, shift):
        self.dataset, self.missed, self.shift = dataset, set(missed), shift
        self.by_shape = {}
        self.detector = types.SimpleNamespace(name="known", calibration=CAL)

    def set_markup(self, markup):
        assert markup == "course"

    def detect(self, image):
        i = self._index(image)
        if i in self.missed:
            return base.Detections.empty()
        cx, cy, side, _ = geometry.upright_square(self.dataset[i]["keypoints"], 1.0)
        # the box that detectors.crop_for_box maps onto this face's crop, by CAL
        bw = side / CAL["size"]
        bx, by = cx - CAL["dx"] * bw, cy - CAL["dy"] * bw
        self.current = i
        return base.Detections([[bx - bw / 2, by - bw / 2, bw, bw]], [0.9])

    def keypoints_for(self, image, detections):
        if len(detections) == 0:
            return np.zeros((0, 68, 2)), np.zeros(0)
        return self.dataset[self.current]["keypoints"][None] + [self.shift, 0.0], np.ones(1)

    def _index(self, image):
        key = image.tobytes()[:4096] + bytes(str(image.shape), "ascii")
        if not self.by_shape:
            for j in range(len(self.dataset)):
                im = self.dataset[j]["image"]
                self.by_shape[im.tobytes()[:4096] + bytes(str(im.shape), "ascii")] = j
        return self.by_shape[key]


@needs_data
def test_comparison_reports_what_a_known_system_did():
    test = course.dataset("test", subset=10)
    shift = 2.0
    fake = KnownAnswers(test, missed=[3], shift=shift)
    rows = benchmark.compare_with_dlib({"known": fake}, {}, frames=10, progress=False)
    row = rows[0]
    assert row["system"] == "known" and row["faces found"] == "9/10"
    expected = np.mean([shift / np.linalg.norm(test[i]["keypoints"][36] - test[i]["keypoints"][45])
                        for i in range(10) if i != 3])
    assert row["NME mean %"] == pytest.approx(100 * expected, abs=0.01)
    assert row["FR@8 %"] >= 10.0   # the missed face is a failure
    assert row["keypoints ms/face"] is not None and row["pipeline ms/image (median)"] >= 0


def test_write_table(tmp_path, capsys):
    rows = [{"system": "a", "NME mean %": 4.1, "note": None}, {"system": "b", "NME mean %": 7.2,
                                                                "note": "x"}]
    path = common.write_table(rows, tmp_path, "t", "Title")
    text = path.read_text()
    assert text.startswith("# Title") and "| system | NME mean % | note |" in text
    assert "| a | 4.1 |  |" in text and "| b | 7.2 | x |" in text
    assert json.loads((tmp_path / "t.json").read_text()) == rows
    assert "7.2" in capsys.readouterr().out


@pytest.mark.slow
def test_model_row_of_an_untrained_spec_has_latency_but_no_accuracy(tmp_path):
    row = benchmark.model_row("resnet18:width=8", tmp=tmp_path, progress=False)
    assert row["arch"] == "resnet18 {'width': 8}" and row["parameters (M)"] < 1
    assert row["torch ms/face"] > 0 and row["onnx ms/face"] > 0
    assert row["test NME mean %"] is None and row["val NME %"] is None
    assert not list(tmp_path.iterdir())     # the temporary checkpoint and export are removed


@pytest.mark.slow
def test_untrained_spec_with_another_input_size(tmp_path):
    row = benchmark.model_row("heatmap:width=8,input=64", tmp=tmp_path, progress=False)
    assert row["input px"] == 64 and row["arch"] == "heatmap {'width': 8, 'input_size': 64}"
    row = benchmark.model_row("resnet18:width=8,input=96", tmp=tmp_path, progress=False)
    assert row["input px"] == 96 and row["arch"] == "resnet18 {'width': 8}"


def test_failures_caught_by_the_least_confident_faces():
    bad = np.array([False] * 18 + [True, True])
    # the two bad faces are the least confident: the first tenth (2 faces) catches both
    best = common.failures_caught(np.r_[np.linspace(0.5, 1, 18), 0.1, 0.2], bad)
    assert best["in the least confident tenth"] == 2 and best["share caught by flagging 10 %"] == 1
    # ... and the most confident: nothing caught until the very end
    worst = common.failures_caught(np.r_[np.linspace(0.1, 0.5, 18), 0.9, 1.0], bad)
    assert worst["in the least confident tenth"] == 0
    assert worst["share caught by flagging 10 %"] == 0
    assert best["AUC (caught vs flagged)"] > 0.9 > 0.1 > worst["AUC (caught vs flagged)"]
    # a confidence that says nothing (all equal) ranks by position: the AUC is that of chance
    # when the bad faces are spread evenly
    spread = np.zeros(100, bool)
    spread[5::10] = True
    assert common.failures_caught(np.ones(100), spread)["AUC (caught vs flagged)"] == \
        pytest.approx(0.5, abs=0.01)
    none = common.failures_caught(np.ones(10), np.zeros(10, bool))
    assert none["AUC (caught vs flagged)"] is None and none["in the least confident tenth"] == 0


def test_shared_threads_reports_speed_and_sameness(astronaut):
    rows = benchmark.shared_threads(paths.DEFAULT_MODEL, [astronaut] * 4, threads=(1, 2),
                                    rounds=1, onnx_threads=(None, 1))
    every = os.cpu_count()
    assert [(r["detector"], r["onnxruntime threads"], r["threads"]) for r in rows] == \
        [("blazeface", every, 1), ("blazeface", every, 2), ("blazeface", 1, 1),
         ("blazeface", 1, 2), ("haar", every, 1), ("haar", every, 2), ("haar", 1, 1),
         ("haar", 1, 2)]
    assert all(r["same as sequential"] and r["photos/s"] > 0 for r in rows)


def test_tiled_detection_maps_the_quarters_back_and_merges_duplicates(astronaut):
    """A face in one quarter is found by the whole-photo pass and by its quarter: one box
    there, where the whole photo's detector puts it; a face too small for the whole photo is
    found in its quarter, in the photo's pixels."""
    from benchmarks.benchmark_detection import Tiled, miss_kind
    from facial_keypoints.detection.blazeface import BlazeFaceDetector

    detector = BlazeFaceDetector()
    canvas = np.zeros((1024, 1024, 3), np.uint8)
    canvas[40:552, 40:552] = astronaut                     # top-left quarter
    (alone,) = detector(canvas).boxes
    near = [b for b in Tiled(detector)(canvas).boxes
            if np.linalg.norm(b[:2] + b[2:] / 2 - alone[:2] - alone[2:] / 2) < alone[2] / 2]
    assert len(near) == 1 and np.abs(near[0] - alone).max() < 0.1 * alone[2]
    small = np.zeros((1200, 1200, 3), np.uint8)            # a 48-px face, bottom-right
    small[924:1180, 924:1180] = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    assert len(detector(small)) == 0                        # too small for the whole photo
    found = Tiled(detector)(small).boxes
    assert any(990 < x < 1020 and 940 < y < 975 for x, y, _, _ in found), found
    assert miss_kind(np.c_[np.linspace(0, 30, 68), np.zeros(68)]) == "small (< 40 px)"


def test_a_mirrored_training_face_keeps_its_points_on_the_same_features():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    pts = rng.uniform(5, 55, (68, 2))
    image, box, mirrored = dlib_reference.mirrored(gray, np.array([10.0, 5, 30, 40]), pts)
    np.testing.assert_array_equal(image, gray[:, ::-1])
    np.testing.assert_allclose(box, [80 - 10 - 30, 5, 30, 40])
    # point i of the mirror is the mirror of point FLIP_INDICES[i]: the right eye's outer
    # corner (36) of the mirrored face is where the left eye's (45) was, mirrored
    np.testing.assert_allclose(mirrored[36], [79 - pts[45, 0], pts[45, 1]])
    np.testing.assert_allclose(dlib_reference.mirrored(image, box, mirrored)[2], pts)


@needs_dlib
@needs_300w
def test_dlibs_trainer_learns_from_a_few_faces(tmp_path, monkeypatch):
    # the same code on six training faces and their mirrors, with few trees: a predictor file
    # dlib reads, and a note of how it was made
    import dlib

    real = dlib_reference.split_dataset
    monkeypatch.setattr(dlib_reference, "split_dataset", lambda name: real(name, subset=3))
    options = dlib.shape_predictor_training_options()
    options.cascade_depth, options.num_trees_per_cascade_level = 2, 5
    dest = dlib_reference.train(tmp_path / "p.dat", progress=False, options=options)
    note = json.loads(dest.with_suffix(".json").read_text())
    assert note["faces"] == 6 and note["with_mirrors"] == 12
    predictor = benchmark.DlibPipeline(0, dest)
    gray = cv2.cvtColor(images.load_image(ASTRONAUT), cv2.COLOR_RGB2GRAY)
    rects = predictor.detect(gray)
    assert predictor.keypoints(gray, rects[0]).shape == (68, 2)


def test_speedups_times_every_setup_on_the_same_frames(astronaut):
    pipes = {"default": pipeline.KeypointPipeline(),
             "every face refitted": pipeline.KeypointPipeline(refit_within=None)}
    times = speedups.timings(pipes, [astronaut, astronaut])
    assert set(times) == set(pipes)
    assert all(total > median > 0 and total > mean > 0 for total, median, mean in times.values())


def test_the_refit_rule_picks_the_most_skipped_within_its_cost():
    def row(name, skipped, course, wild):
        return {"refit_within": name, "course val: refits skipped %": skipped[0],
                "course val: NME %": course, "300-W held-out: refits skipped %": skipped[1],
                "300-W held-out: NME %": wild}
    table = [row("every face refitted", (0, 0), 3.9, 3.5),
             row("a", (30, 30), 3.9, 3.5),
             row("b", (60, 60), 3.904, 3.495),      # within 0.005 on both: the most skipped
             row("c", (90, 90), 3.9, 3.506),        # cheaper on one set, too dear on the other
             row("no refit (refine 0)", (100, 100), 3.95, 3.55)]
    assert refit.pick(table)["refit_within"] == "b"
    table[2]["course val: NME %"] = 3.906
    assert refit.pick(table)["refit_within"] == "a"
