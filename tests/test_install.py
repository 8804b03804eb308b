"""The tool as a user installs it: ``pip install`` of the project (not editable) into a fresh
environment gives ``facial_keypoints``, the ``fkp-*`` commands and the shipped model, without
PyTorch, small, and working from any folder with the same keypoints as the full environment.

The wheel is built once per session (``pip wheel --no-deps``) and installed with the exact
versions CI uses (``constraints.txt``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from facial_keypoints import KeypointPipeline
from facial_keypoints.paths import DEFAULT_PHOTO
from helpers_keypoints import ROOT

pytestmark = pytest.mark.slow

#: The light install's budget (issue: a venv of at most 600 MB, installed in at most 120 s).
MAX_MB, MAX_SECONDS = 600, 120


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    done = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", ROOT, "-w", out])
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("facial_keypoints-*.whl")
    return path


@pytest.fixture(scope="module")
def light(tmp_path_factory, wheel):
    """A fresh venv with the wheel installed: (its bin folder, install seconds, size in MB)."""
    venv = tmp_path_factory.mktemp("light") / "venv"
    assert run([sys.executable, "-m", "venv", venv]).returncode == 0
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    t0 = time.perf_counter()
    done = run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel,
                "-c", ROOT / "constraints.txt"], env=env)
    seconds = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    return venv / "bin", seconds, size / 1e6


def test_the_wheel_holds_one_package_and_its_files(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"facial_keypoints"}        # no generic top-level module (utils, models, ...)
    for f in ("keypoints/shipped/keypoints.onnx", "keypoints/shipped/keypoints.pt",
              "detection/blazeface_models/face_detection_short_range.tflite",
              "detection/blazeface_models/LICENSE", "detection/calibration.json",
              "samples/astronaut.jpg", "serve/static/index.html", "serve/static/app.js",
              "serve/static/style.css"):
        assert f"facial_keypoints/{f}" in names


def test_light_install_has_no_torch_and_fits_the_budget(light):
    bin_dir, seconds, mb = light
    listed = run([bin_dir / "python", "-m", "pip", "list", "--format", "json"]).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert "facial-keypoints" in installed
    assert not installed & {"torch", "torchvision", "pandas", "matplotlib", "tensorflow"}
    print(f"light install: {seconds:.0f} s, {mb:.0f} MB")
    assert mb <= MAX_MB and seconds <= MAX_SECONDS


def test_fkp_detect_from_another_folder_gives_the_full_environments_keypoints(light, tmp_path):
    bin_dir, _, _ = light
    done = run([bin_dir / "fkp-detect", DEFAULT_PHOTO, "--json", "out.json", "--quiet"],
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (faces,) = [e["faces"] for e in json.loads((tmp_path / "out.json").read_text())["images"]]
    (want,) = KeypointPipeline().get_landmarks(DEFAULT_PHOTO)   # this (full) environment
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0]["keypoints"], want.keypoints, atol=0.5)
    imported = run([bin_dir / "python", "-c", "import facial_keypoints as f; print(f.__file__)"],
                   cwd=tmp_path)
    assert "site-packages" in imported.stdout, imported.stderr


@pytest.mark.parametrize("command,extra", [
    (["fkp-detect", DEFAULT_PHOTO, "--backend", "torch"], "train"),
    (["fkp-train", "--epochs", "1"], "train"), (["fkp-evaluate"], "train"),
    (["fkp-serve"], "serve"), (["fkp-batch", "in/", "out/"], "scale")],
    ids=lambda c: " ".join(map(str, c[:1] + c[2:])) if isinstance(c, list) else None)
def test_what_needs_an_extra_in_the_light_install_names_it(light, tmp_path, command, extra):
    bin_dir, _, _ = light
    done = run([bin_dir / command[0], *command[1:]], cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert f"pip install 'facial-keypoints[{extra}]'" in line
