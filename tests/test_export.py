"""Tests of export.py: the ONNX export of a checkpoint gives the same keypoints as PyTorch
(within 0.05 px, on the shipped model and real faces), a stale export is redone, and a damaged
one is a clear error. Exports go to temporary folders, never beside the shipped model."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facial_keypoints import files, paths
from facial_keypoints.cli import export as export_cmd
from facial_keypoints.data import course
from facial_keypoints.geometry import upright_square
from facial_keypoints.keypoints import checkpoints, export, pipeline, runtime
from helpers_keypoints import ASTRONAUT, make_tiny_checkpoint, needs_data

SHIPPED = paths.DEFAULT_MODEL


@pytest.fixture(scope="module")
def shipped_copy(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / SHIPPED.name
    shutil.copyfile(SHIPPED, path)
    return path


@pytest.fixture(scope="module")
def both_backends():
    """The shipped model on PyTorch, and on onnxruntime from its committed (float) ONNX twin."""
    return (pipeline.KeypointPipeline(SHIPPED, backend="torch"),
            pipeline.KeypointPipeline(SHIPPED, backend="onnx", precision="fp32"))


def test_the_committed_onnx_is_the_shipped_checkpoints_twin(both_backends):
    assert runtime.current_export(paths.SHIPPED_ONNX, SHIPPED) is not None
    assert both_backends[1].model.path == paths.SHIPPED_ONNX      # used as it is, not exported


@pytest.mark.slow
def test_export_writes_the_onnx_file_beside_the_checkpoint(shipped_copy):
    pipeline.KeypointPipeline(shipped_copy, backend="onnx")
    onnx_file = shipped_copy.with_suffix(".onnx")
    assert onnx_file.is_file() and not list(onnx_file.parent.glob("*.tmp"))
    meta = runtime.OnnxKeypointModel(onnx_file).metadata
    assert meta["checkpoint_sha256"] == files.file_sha256(shipped_copy)
    assert json.loads(meta["checkpoint_meta"])["arch"] == \
        checkpoints.read_checkpoint(shipped_copy)["arch"]


@needs_data
def test_onnx_keypoints_match_pytorch_within_0_05_px(both_backends):
    torch_det, onnx_det = both_backends
    test = course.dataset("test", subset=40)
    worst = 0.0
    for i in range(len(test)):
        sample = test[i]
        crop = upright_square(sample["keypoints"], torch_det.crop_scale)
        (a, conf_a), (b, conf_b) = (det.keypoints_for_crops(sample["image"], [crop])
                                    for det in (torch_det, onnx_det))
        worst = max(worst, float(np.abs(a - b).max()))
        np.testing.assert_allclose(conf_a, conf_b, atol=1e-4)
    print(f"largest ONNX - PyTorch difference over {len(test)} test faces: {worst:.2e} px")
    assert worst <= 0.05


def test_onnx_pipeline_matches_pytorch_on_the_bundled_photo(both_backends):
    torch_det, onnx_det = both_backends
    a, b = torch_det.get_landmarks(ASTRONAUT), onnx_det.get_landmarks(ASTRONAUT)
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(a[0].keypoints, b[0].keypoints, atol=0.05)


def test_onnx_batch_of_several_faces(both_backends):
    torch_det, onnx_det = both_backends
    x = torch.rand(5, 3 if torch_det.color else 1, torch_det.size, torch_det.size).numpy()
    for a, b in zip(onnx_det.model.predict(x), torch_det.model.predict(x)):
        assert a.shape[0] == 5
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.slow
def test_a_stale_export_is_redone(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt")
    first = export.onnx_model_for(ckpt)
    sha = first.metadata["checkpoint_sha256"]
    model, meta = checkpoints.load_model(ckpt)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    checkpoints.save_checkpoint(ckpt, model, meta)          # same path, other weights
    second = export.onnx_model_for(ckpt)
    assert second.metadata["checkpoint_sha256"] != sha
    x = torch.rand(1, 1, meta["input_size"], meta["input_size"])
    with torch.no_grad():
        np.testing.assert_allclose(second.predict(x.numpy())[0][:, 0], model(x).numpy(),
                                   atol=1e-4)


def test_a_damaged_export_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(runtime.OnnxExportError, match="export again"):
        runtime.OnnxKeypointModel(bad)


def test_backend_choice_is_checked(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="backend"):
        pipeline.KeypointPipeline(ckpt, backend="tensorrt")


@pytest.mark.slow
def test_command_line_export(tmp_path, capsys):
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt")
    assert export_cmd.main(["--model", str(ckpt), "--out", str(tmp_path / "x.onnx")]) == 0
    assert (tmp_path / "x.onnx").is_file() and "wrote" in capsys.readouterr().out
    assert export_cmd.main(["--model", str(tmp_path / "missing.pt")]) == 2
    assert "no such weights file" in capsys.readouterr().err


@pytest.mark.slow
def test_a_damaged_export_beside_the_checkpoint_is_replaced(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt")
    ckpt.with_suffix(".onnx").write_bytes(b"half a file")
    model = export.onnx_model_for(ckpt)
    assert model.metadata["checkpoint_sha256"] == files.file_sha256(ckpt)


@pytest.mark.slow
def test_a_read_only_model_folder_exports_to_the_temporary_folder(tmp_path, monkeypatch):
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt")
    monkeypatch.setattr(export.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    real_export = export.export_onnx

    def read_only_beside(checkpoint, dest=None):   # as a read-only folder (even for root)
        if Path(dest).parent == ckpt.parent:
            raise PermissionError(13, "Permission denied", str(dest))
        return real_export(checkpoint, dest)

    monkeypatch.setattr(export, "export_onnx", read_only_beside)
    model = export.onnx_model_for(ckpt)
    assert not ckpt.with_suffix(".onnx").exists()
    assert len(list((tmp_path / "tmp").glob("facial-keypoints-*.onnx"))) == 1
    assert model.metadata["checkpoint_sha256"] == files.file_sha256(ckpt)
    assert export.onnx_model_for(ckpt).metadata == model.metadata   # found there next time


@pytest.mark.slow
def test_command_line_backend_onnx_gives_the_torch_keypoints(shipped_copy, tmp_path):
    out = {}
    for backend in ("torch", "onnx"):
        dest = tmp_path / f"{backend}.json"
        run = subprocess.run([sys.executable, "-m", "facial_keypoints.cli.detect", str(ASTRONAUT),
                              "--model", str(shipped_copy), "--backend", backend,
                              "--precision", "fp32", "--json",
                              str(dest), "--quiet"], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        out[backend] = json.loads(dest.read_text())["images"][0]["faces"]
    assert len(out["torch"]) == len(out["onnx"]) == 1
    np.testing.assert_allclose(out["onnx"][0]["keypoints"], out["torch"][0]["keypoints"],
                               atol=0.05)
