"""Tests of the INT8 twin (keypoints/quantize.py, keypoints/runtime.py, training/ship.py): the
shipped model's twin is the one the onnx back-end runs by default and stays close to the float
model; a twin is taken only for the checkpoint it was made from; asking for one that is not
there is a clear error; fkp-ship writes a twin only when it kept it."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from facial_keypoints import paths
from facial_keypoints.keypoints import export, pipeline, quantize, runtime
from facial_keypoints.landmarks import LEFT_EYE_OUTER, RIGHT_EYE_OUTER
from facial_keypoints.training import ship
from helpers_keypoints import ASTRONAUT, TINY_INPUT, make_tiny_checkpoint


def tiny_twin(folder, seed=0):
    """A tiny checkpoint with its float export and an INT8 twin calibrated on noise."""
    ckpt = make_tiny_checkpoint(folder / "m.pt", seed=seed)
    fp32 = export.export_onnx(ckpt)
    crops = np.random.default_rng(0).random((8, 1, TINY_INPUT, TINY_INPUT), dtype=np.float32)
    return ckpt, quantize.quantize_onnx(fp32, runtime.int8_path_for(ckpt), crops)


def test_the_shipped_model_runs_its_int8_twin_by_default():
    assert runtime.current_export(paths.SHIPPED_INT8, paths.DEFAULT_MODEL) is not None
    pipe = pipeline.KeypointPipeline()
    assert pipe.model.path == paths.SHIPPED_INT8 and pipe.model.precision == "int8"
    fp32 = pipeline.KeypointPipeline(precision="fp32")
    assert fp32.model.path == paths.SHIPPED_ONNX and fp32.model.precision == "fp32"


def test_the_int8_twin_stays_close_to_the_float_model():
    a = pipeline.KeypointPipeline(precision="int8").get_landmarks(ASTRONAUT)
    b = pipeline.KeypointPipeline(precision="fp32").get_landmarks(ASTRONAUT)
    assert len(a) == len(b) == 1
    eyes = np.linalg.norm(b[0].keypoints[LEFT_EYE_OUTER] - b[0].keypoints[RIGHT_EYE_OUTER])
    apart = np.linalg.norm(a[0].keypoints - b[0].keypoints, axis=1)
    assert apart.mean() < 0.01 * eyes            # 1 % of the eye distance, on average


def test_a_twin_is_taken_only_for_its_own_checkpoint(tmp_path):
    ckpt, twin = tiny_twin(tmp_path)
    graph = onnx.load(str(twin))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["precision"] == "int8" and "checkpoint_sha256" in meta
    assert any(n.op_type == "DequantizeLinear" for n in graph.graph.node)
    auto = pipeline.KeypointPipeline(ckpt)
    assert auto.model.precision == "int8" and auto.model.path == twin
    assert pipeline.KeypointPipeline(ckpt, precision="fp32").model.precision == "fp32"
    # the checkpoint changes (another training): its old twin is stale, not taken
    make_tiny_checkpoint(ckpt, seed=1)
    assert pipeline.KeypointPipeline(ckpt).model.precision == "fp32"
    with pytest.raises(runtime.ModelLoadError, match="no INT8 twin.*fkp-ship"):
        pipeline.KeypointPipeline(ckpt, precision="int8")


def test_precision_choices_are_checked(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="precision"):
        pipeline.KeypointPipeline(ckpt, precision="int4")
    with pytest.raises(ValueError, match="onnx back-end only"):
        pipeline.KeypointPipeline(ckpt, backend="torch", precision="int8")
    with pytest.raises(ValueError, match="crops"):
        quantize.quantize_onnx(export.export_onnx(ckpt), tmp_path / "x.onnx", np.zeros((0,)))
    assert not (tmp_path / "x.onnx").exists()


def test_ship_writes_the_twin_only_when_it_was_kept(tmp_path):
    ckpt, _ = tiny_twin(tmp_path)
    crops = np.random.default_rng(1).random((4, 1, TINY_INPUT, TINY_INPUT), dtype=np.float32)
    rows = [{"faces": "held-out faces", "fp32": 5.0, "int8": 5.01}]
    dest = tmp_path / "out" / "shipped.pt"
    dest.parent.mkdir()
    report = {"rows": rows, "kept": True, "crops": crops, "calibration": len(crops)}
    ship.ship_model(ckpt, dest, {}, int8=report)
    assert runtime.current_export(runtime.int8_path_for(dest), dest) is not None
    card = dest.with_name("MODEL_CARD.md").read_text()
    assert "every figure on this card was measured with it" in card and "| 5.00 | 5.01 |" in card
    shutil.copyfile(ckpt, tmp_path / "other.pt")
    ship.ship_model(tmp_path / "other.pt", dest, {}, int8={**report, "kept": False})
    assert not runtime.int8_path_for(dest).exists()            # no stale twin left beside it
    assert "it was not shipped" in dest.with_name("MODEL_CARD.md").read_text()
