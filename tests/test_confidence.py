"""The confidence as a probability of a good fit (``evaluation.calibration``,
``keypoints.confidence``) and the ``min_confidence`` that drops doubtful detections: the
fitting on known data, the shipped model's calibration, the visor the detector takes for a
face on the bundled photo turned.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from facial_keypoints import KeypointPipeline
from facial_keypoints.cli import detect as detect_cmd
from facial_keypoints.evaluation.calibration import calibrate, choose_threshold, fit_isotonic
from facial_keypoints.keypoints.confidence import probability
from facial_keypoints.paths import DEFAULT_PHOTO


def test_isotonic_fit_pools_adjacent_violators():
    knots, values = fit_isotonic([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1])
    assert knots.tolist() == [1.0, 2.5, 4.0] and values.tolist() == [0.0, 0.5, 1.0]
    knots, values = fit_isotonic([3.0, 1.0, 2.0], [1, 0, 0])          # any order
    assert knots.tolist() == [1.5, 3.0] and values.tolist() == [0.0, 1.0]


def test_probability_is_flat_beyond_the_knots_and_keeps_nan():
    curve = {"log_raw": [np.log(0.01), np.log(0.1)], "probability": [0.0, 1.0]}
    p = probability([0.0, 0.001, np.sqrt(0.001), 0.1, 0.5, np.nan], curve)
    assert p[:2].tolist() == [0.0, 0.0] and p[2] == pytest.approx(0.5)
    assert p[3:5].tolist() == [1.0, 1.0] and np.isnan(p[5])


def fake_fits(n_faces, per_face, rng, wrong=False):
    """Fits whose chance of being good is known: sigmoid(12 * (ln raw + 3))."""
    log_raw = rng.normal(-2.6 if not wrong else -3.6, 0.5, n_faces * per_face)
    good = rng.random(len(log_raw)) < 1 / (1 + np.exp(-12 * (log_raw + 3)))
    return {"raw": np.exp(log_raw), "nme": np.where(good, 0.03, 0.2),
            "face": np.repeat(np.arange(n_faces), per_face)}


def test_calibrated_confidence_matches_the_share_of_good_fits():
    rng = np.random.default_rng(0)
    found, wrong = fake_fits(1000, 4, rng), fake_fits(1000, 4, rng, wrong=True)
    calibration, tables = calibrate(found, wrong)
    for row in tables["both"]:       # each out-of-fold bin: confidence ~ share of good fits
        if row["fits"] >= 200:
            assert abs(row["mean confidence"] - row["share with a good fit"]) < 0.05, row
    lowest = probability(found["raw"], calibration).min()
    assert calibration["min_confidence"] <= lowest < calibration["min_confidence"] + 0.01
    assert choose_threshold(np.array([0.5, 0.1234, 0.9])) == 0.12


@pytest.fixture(scope="module")
def shipped():
    return KeypointPipeline()


def test_the_shipped_model_is_calibrated_for_each_head(shipped):
    for markup in shipped.markups:
        shipped.set_markup(markup)
        cal = shipped.calibration
        assert cal and 0 < cal["min_confidence"] < 0.5 and cal["faces"] > 300
        assert np.all(np.diff(cal["log_raw"]) > 0) and np.all(np.diff(cal["probability"]) >= 0)
        assert 0 <= cal["probability"][0] and cal["probability"][-1] <= 1
    shipped.set_markup("300w")
    (face,) = shipped.get_landmarks(str(DEFAULT_PHOTO))
    assert 0.9 < face.confidence <= 1.0                 # a good fit reads as one


@pytest.fixture(scope="module")
def turned_photo():
    """The bundled photo turned by 60 degrees (canvas enlarged): BlazeFace also takes the
    helmet's visor for a face there (score 0.5)."""
    return np.asarray(Image.open(DEFAULT_PHOTO).convert("RGB").rotate(60, expand=True,
                                                                     resample=Image.BILINEAR))


def test_the_visor_is_dropped_by_default_and_the_face_kept(shipped, turned_photo):
    everything = KeypointPipeline(min_confidence=0).get_landmarks(turned_photo)
    assert len(everything) == 2
    visor = min(everything, key=lambda f: f.confidence)
    assert visor.confidence < 0.01
    (face,) = shipped.get_landmarks(turned_photo)
    assert face.confidence > 0.5 and not np.allclose(face.box, visor.box)


def test_given_boxes_are_never_dropped(shipped):
    blank = np.zeros((200, 200, 3), np.uint8)
    assert len(shipped.get_landmarks(blank, boxes=[[50, 50, 100, 100], [10, 10, 40, 40]])) == 2


def test_cli_min_confidence(tmp_path, turned_photo, capsys):
    photo = tmp_path / "turned.png"
    Image.fromarray(turned_photo).save(photo)
    for setting, n in ((["--min-confidence", "0"], 2), ([], 1)):
        out = tmp_path / f"r{n}.json"
        assert detect_cmd.main([str(photo), "--json", str(out), "--quiet", *setting]) == 0
        (entry,) = json.loads(out.read_text())["images"]
        assert len(entry["faces"]) == n
    with pytest.raises(SystemExit) as e:
        detect_cmd.main([str(photo), "--min-confidence", "1.5"])
    assert e.value.code == 2 and "argument --min-confidence" in capsys.readouterr().err
