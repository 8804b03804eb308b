"""Bad data, broken training inputs and interruptions, tried as a careless or unlucky user
would: each gives one clear line and loses nothing (the images and models of the same battery
are test_bad_input.py).
"""
from __future__ import annotations

import csv
import http.client
import io
import os
import queue
import re
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FAKE_SPLITS, face_layout, write_keypoints_csv
from facial_keypoints import landmarks
from facial_keypoints.cli import fetch_data as fetch_data_cmd
from facial_keypoints.cli import train as train_cmd
from facial_keypoints.data import course, fetch
from facial_keypoints.data.course import DataError
from facial_keypoints.images import ImageReadError
from facial_keypoints.keypoints import checkpoints, nets
from facial_keypoints.training import ship, transforms
from helpers_keypoints import (
    ENV,
    ROOT,
    listing,
    make_tiny_checkpoint,
    run_py,
)

# ============================================================================================
# Data: keypoint CSVs and image folders
# ============================================================================================
CSV = FAKE_SPLITS["train"][0]
IMAGES = FAKE_SPLITS["train"][1]
W, H = 40, 32          # the fake dataset's images
ROW, LINE = 1, 3       # the row a case damages: the second, on line 3 of the CSV


@pytest.fixture
def fake_data(fake_mirror, tmp_path):
    """A complete (fake, small) dataset in a data folder of its own."""
    return fetch.fetch_dataset(tmp_path / "data", quiet=True)


def _rewrite_row(data_dir, change):
    path = data_dir / CSV
    rows = list(csv.reader(path.read_text().splitlines()))
    change(rows[LINE - 1])
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return rows[LINE - 1][0]


def _set_point(index, x=None, y=None):
    def change(row):
        if x is not None:
            row[1 + 2 * index] = str(x)
        if y is not None:
            row[2 + 2 * index] = str(y)
    return change


@dataclass
class DataCase:
    id: str
    damage: Callable                     # data dir -> the damaged row's file name (or None)
    constructor: str | None = None       # regex: the dataset refuses the CSV when it is made
    item: tuple | None = None            # (error class, regex): reading row ROW fails
    problem: str | None = None           # regex one of check_dataset's problems must match
    notes: str = ""


def _drop_columns(d):
    path = d / CSV
    lines = path.read_text().splitlines()
    path.write_text("\n".join(",".join(line.split(",")[:60]) for line in lines) + "\n")


def _delete_image(d):
    name = _rewrite_row(d, lambda row: None)
    (d / IMAGES / name).unlink()
    return name


def _text_image(d):
    name = _rewrite_row(d, lambda row: None)
    (d / IMAGES / name).write_text("not an image")
    return name


DATA_CASES = [
    DataCase("csv-missing-columns", _drop_columns, constructor=r"expected 137 columns",
             problem=r"expected 137 columns"),
    DataCase("csv-nan", lambda d: _rewrite_row(d, _set_point(5, x="")),
             constructor=rf"missing or non-numeric coordinates \(line {LINE}\)",
             problem=rf"line {LINE}"),
    DataCase("coordinates-far-negative", lambda d: _rewrite_row(d, _set_point(30, x=-0.6 * W)),
             item=(DataError, rf"line {LINE} .*far outside the {W}x{H} image.*point 30"),
             problem=rf"1 row\(s\) have keypoints far outside their image \(line {LINE}\)"),
    DataCase("coordinates-far-beyond", lambda d: _rewrite_row(d, _set_point(8, y=1.6 * H)),
             item=(DataError, rf"line {LINE} .*far outside.*point 8 at \(\S+, 51\.2\)"),
             problem=rf"far outside their image \(line {LINE}\)"),
    DataCase("coordinates-a-little-outside",
             lambda d: _rewrite_row(d, _set_point(0, x=-0.3 * W, y=1.2 * H)),
             notes="a face cut by the border: legitimate, read as it is"),
    DataCase("row-whose-image-is-missing", _delete_image,
             item=(ImageReadError, rf"no such file \(listed in .*{CSV}, line {LINE}\)"),
             problem=r"training/: 1 image\(s\) listed in .* are missing"),
    DataCase("row-whose-image-is-not-an-image", _text_image,
             item=(ImageReadError, rf"not a readable image .*line {LINE}\)"),
             problem=r"training/: 1 image\(s\) listed in .* cannot be read"),
]


@pytest.mark.parametrize("case", DATA_CASES, ids=lambda c: c.id)
def test_data_case(case, fake_data):
    name = case.damage(fake_data)
    csv_path = str(fake_data / CSV)
    problems = fetch.check_dataset(fake_data)
    if case.problem is None:
        assert problems == []
    else:
        assert any(re.search(case.problem, p) for p in problems), problems
    if case.constructor:
        with pytest.raises(DataError, match=case.constructor) as err:
            course.dataset("train", data_dir=fake_data)
        assert csv_path in str(err.value)
        return
    ds = course.dataset("train", data_dir=fake_data)
    assert len(ds) == FAKE_SPLITS["train"][2]
    if case.item is None:
        sample = ds[ROW]
        assert sample["image"].shape == (H, W, 3)
        np.testing.assert_allclose(sample["keypoints"][0], [-0.3 * W, 1.2 * H], atol=1e-4)
        # and the transforms cope with it: a face crop reaching past the border
        out = transforms.face_transform(32)(sample)
        assert torch.isfinite(out["keypoints"]).all()
    else:
        kind, pattern = case.item
        with pytest.raises(kind) as err:
            ds[ROW]
        message = str(err.value)
        assert re.search(pattern, message) and csv_path in message and name in message, message
    for i in set(range(len(ds))) - {ROW}:      # the other rows are still read
        assert ds[i]["image"].shape == (H, W, 3)


def test_a_little_outside_is_legitimate_on_the_real_data_too():
    """The margin keeps every real row: the course data has keypoints up to ~10 % of the
    image size outside it (faces cut by the border), far below the half-image margin."""
    pts = face_layout(center=(0, 0), width=60)          # a face centred on the top-left corner
    assert not course._far_outside(pts, 100, 100).any()
    assert course._far_outside(pts - 100, 100, 100).any()


def test_half_extracted_data_folder_is_repaired(fake_mirror, tmp_path):
    """An interrupted set-up of an older version left the CSVs but not all images, and no
    .complete marker: not ready, check_dataset says what is missing, fetch_dataset repairs it."""
    data = fetch.fetch_dataset(tmp_path / "data", quiet=True)
    (data / fetch.COMPLETE_MARKER).unlink()
    for folder in ("training", "test"):
        for image in sorted((data / folder).iterdir())[1:]:
            image.unlink()
    assert not fetch.dataset_ready(data)
    problems = fetch.check_dataset(data)
    assert len(problems) == 2 and all("missing" in p for p in problems), problems
    assert fetch.fetch_dataset(data, quiet=True) == data
    assert fetch.dataset_ready(data) and fetch.check_dataset(data) == []
    assert len(course.dataset("train", data_dir=data)) == FAKE_SPLITS["train"][2]


def _html_zip(folder):
    (folder / fetch.DATA_ZIP).write_text("<html><body>Please log in</body></html>")


def _other_zip(folder):
    with zipfile.ZipFile(folder / fetch.DATA_ZIP, "w") as z:
        jpeg = io.BytesIO()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpeg, "JPEG")
        z.writestr("obamas.jpg", jpeg.getvalue())


def _a_file(folder):
    (folder / "train-test-data.txt").write_text("the zip is elsewhere")
    return folder / "train-test-data.txt"


#: kind -> (what the variable is set to, given the mirror folder and the data folder; the
#: error's regex).
MIRROR_CASES = {
    "mirror-is-a-file": (lambda m, d: _a_file(m),
                         r"FKP_DATA_MIRROR is set to .*which is not a folder"),
    "mirror-is-the-data-folder": (lambda m, d: d,
                                  r"FKP_DATA_MIRROR=.* has no train-test-data\.zip"),
    "mirror-zip-is-a-web-page": (lambda m, d: _html_zip(m) or m,
                                 r"train-test-data\.zip is not a complete zip"),
    "mirror-zip-of-other-files": (lambda m, d: _other_zip(m) or m,
                                  r"does not hold the expected dataset: .*no such keypoint file"),
}


@pytest.mark.parametrize("kind", list(MIRROR_CASES))
def test_mirror_case(kind, tmp_path, monkeypatch, capsys):
    make, pattern = MIRROR_CASES[kind]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("the user's own file")
    target = make(mirror, data)
    monkeypatch.setenv(fetch.MIRROR_ENV, str(target))
    with pytest.raises(DataError, match=pattern):
        fetch.fetch_dataset(data, quiet=True)
    assert listing(data) == ["notes.txt"] and not fetch.dataset_ready(data)
    # the command: exit status 1 and one "error:" line
    assert fetch_data_cmd.main(["--data-dir", str(data),
                                "--images-dir", str(tmp_path / "img")]) == 1
    err = capsys.readouterr().err      # (with the progress bars of an extraction)
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert re.search(pattern, line) and "Traceback" not in err, err
    assert listing(data) == ["notes.txt"]


# ============================================================================================
# Training: a bad row, a damaged or mismatched last.pt -> one line, exit status 1
# ============================================================================================
def make_training_data(root, people=30, frames=3, size=64, bad_row=None):
    """A small complete data folder for train.py: a keypoint CSV and its images."""
    root = Path(root)
    (root / "training").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names, points = [], []
    for p in range(people):
        for k in range(frames):
            name = f"Person{p:02d}_{k:02d}.jpg"
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / "training" / name, quality=90)
            pts = face_layout(center=(size / 2, size / 2), width=size * 0.6)
            names.append(name)
            points.append(pts + rng.normal(0, 0.5, pts.shape))
    if bad_row is not None:
        points[bad_row] = points[bad_row] + [0, 5 * size]          # far below the image
    write_keypoints_csv(root / course.SPLITS["train"][0], names, points)
    write_keypoints_csv(root / course.SPLITS["test"][0], names[:3], points[:3])
    (root / fetch.COMPLETE_MARKER).write_text("made by the tests\n")
    return root


TRAIN_ARGS = ["--arch", "resnet18", "--width", "8", "--input-size", "48", "--batch-size", "8"]


@pytest.fixture(scope="module")
def training_data(tmp_path_factory):
    return make_training_data(tmp_path_factory.mktemp("train_data") / "data")


@pytest.mark.parametrize("workers", [0, 1])
def test_train_command_names_a_corrupt_row(tmp_path, workers, capsys):
    data = make_training_data(tmp_path / "data", people=10, frames=2, bad_row=4)
    code = train_cmd.main([*TRAIN_ARGS, "--epochs", "1", "--workers", str(workers), "--data-dir",
                       str(data), "--out", str(tmp_path / "run")])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "line 6 (Person02_00.jpg)" in line and "far outside the 64x64 image" in line, err


class _RunsCode:
    """Pickled, it calls ``os.system`` when loaded without ``weights_only``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("damage", ["truncated", "other-width", "crafted-pickle"])
def test_resume_from_an_unusable_last_checkpoint(training_data, tmp_path, damage, capsys):
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "code-ran"
    if damage == "crafted-pickle":   # a last.pt that runs a command when unpickled
        torch.save({"model": _RunsCode(marker), "epoch": 1, "history": [], "best_nme": 1.0},
                   out / "last.pt")
        pattern = r"last\.pt: not a readable training checkpoint \(UnpicklingError"
    elif damage == "truncated":
        checkpoints.atomic_torch_save({"model": {}, "epoch": 1}, out / "last.pt")
        data = (out / "last.pt").read_bytes()
        (out / "last.pt").write_bytes(data[: len(data) // 2])
        pattern = r"last\.pt: not a readable training checkpoint .*Delete it to start afresh"
    else:
        net = nets.ResNet18Keypoints(width=16)
        opt = torch.optim.Adam(net.parameters())
        checkpoints.atomic_torch_save({"model": net.state_dict(), "optimizer": opt.state_dict(),
                                  "epoch": 1, "history": [], "best_nme": 1.0}, out / "last.pt")
        pattern = r"last\.pt: these weights do not fit a ResNet18Keypoints"
    before = (out / "last.pt").read_bytes()
    code = train_cmd.main([*TRAIN_ARGS, "--epochs", "2", "--workers", "0", "--subset", "8",
                       "--val-subset", "4", "--data-dir", str(training_data), "--out", str(out),
                       "--resume"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(pattern, err[0]), err
    assert (out / "last.pt").read_bytes() == before            # nothing overwritten
    assert not marker.exists()                                  # no code ran


# ============================================================================================
# Interruptions
# ============================================================================================
def _reader(stream, tag, chunks):
    while chunk := stream.read1(1 << 16):   # tqdm's bars end in "\r", not in a new line
        chunks.put((tag, chunk.decode(errors="replace")))
    chunks.put((tag, None))


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL during epoch 2 of 3: last.pt (epoch 1) and best.pt load, nothing is half
    written; the same command with --resume finishes epochs 2 and 3."""
    out = tmp_path / "run"
    data = make_training_data(tmp_path / "data", people=100)   # epochs of a few seconds
    cmd = ["train.py", *TRAIN_ARGS, "--val-subset", "16", "--epochs", "3", "--workers", "0",
           "--data-dir", data, "--out", out]
    proc = subprocess.Popen([sys.executable, *map(str, cmd)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks = queue.Queue()
    for stream, tag in ((proc.stdout, "out"), (proc.stderr, "err")):
        threading.Thread(target=_reader, args=(stream, tag, chunks), daemon=True).start()
    text, closed, deadline = {"out": "", "err": ""}, 0, time.time() + 240
    try:
        # Epoch 1 is done when its line is printed (after last.pt is written); epoch 2 starts
        # right after it and takes a few seconds (256 frames): the kill lands half a second in.
        while "\nepoch   1 " not in "\n" + text["out"]:
            tag, chunk = chunks.get(timeout=max(1.0, deadline - time.time()))
            if chunk is None:
                closed += 1
                assert closed < 2, f"train.py ended before epoch 2:\n{text}"
                continue
            text[tag] += chunk
        time.sleep(0.5)
    finally:
        proc.kill()                                     # SIGKILL: no clean-up at all
        proc.wait(timeout=60)
    assert proc.returncode == -9
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 1, "the kill was meant to land in epoch 2"
    checkpoints.load_model(out / "best.pt")                   # loads: not half written
    assert [r["epoch"] for r in csv.DictReader(open(out / "log.csv"))] == ["1"]
    assert not [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".part"))]

    resumed = run_py(*cmd, "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at epoch 2" in resumed.stdout
    assert "Traceback" not in resumed.stderr
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert torch.load(out / "last.pt", map_location="cpu", weights_only=False)["epoch"] == 3
    _, meta = checkpoints.load_model(out / "best.pt")
    assert meta["metrics"]["epoch"] in (1, 2, 3)
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "curves.png", "last.pt",
                                                     "log.csv"]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
@pytest.mark.parametrize("before", ["shipped-model-exists", "no-shipped-model-yet"])
def test_shipping_interrupted_leaves_the_shipped_model_as_it_was(tiny_ckpt, tmp_path, monkeypatch,
                                                                 interrupt, before):
    dest = tmp_path / "saved_models" / "keypoints.pt"
    dest.parent.mkdir()
    if before == "shipped-model-exists":
        make_tiny_checkpoint(dest, seed=1)
    expected = listing(dest.parent)
    old = dest.read_bytes() if dest.exists() else None
    real_save = torch.save

    def save_then_fail(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:4096])                    # some bytes, then the interruption
        raise interrupt("interrupted while writing")

    monkeypatch.setattr(torch, "save", save_then_fail)
    metrics = {"faces": 1, "faces_found": 1, "nme_mean": 0.1, "nme_median": 0.1, "auc@8": 0.5,
               "fr@8": 0.1, "rmse_px": 3.0, **{f"nme_{k}": 0.1 for k in landmarks.REGIONS}}
    with pytest.raises(interrupt):
        ship.ship_model(tiny_ckpt, dest, {"crop": metrics})
    monkeypatch.undo()
    assert listing(dest.parent) == expected               # no temporary file, no card
    if old is not None:
        assert dest.read_bytes() == old
        checkpoints.load_model(dest)


class _CutResponse:
    """An HTTP response whose body stops half-way with ``error``."""

    def __init__(self, error, chunks=3):
        self.error, self.chunks = error, chunks
        self.headers = {"Content-Length": str(10 * (1 << 20))}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, n=-1):
        if self.chunks == 0:
            raise self.error
        self.chunks -= 1
        return b"PK\x03\x04" + b"x" * 1000


@pytest.mark.parametrize("error", [ConnectionResetError(104, "Connection reset by peer"),
                                   http.client.IncompleteRead(b"x" * 100, 1000),
                                   KeyboardInterrupt()],
                         ids=["connection-reset", "incomplete-read", "ctrl-c"])
@pytest.mark.parametrize("before", ["no-data-folder", "data-folder-with-a-file"])
def test_setup_killed_mid_download_leaves_data_as_it_was(tmp_path, monkeypatch, error, before):
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    monkeypatch.delenv(fetch.IMAGES_MIRROR_ENV, raising=False)
    data = tmp_path / "data"
    monkeypatch.setattr(fetch, "DATA_DIR", data)
    if before == "data-folder-with-a-file":
        data.mkdir()
        (data / "notes.txt").write_text("mine")
    expected = listing(data)
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        return _CutResponse(error)

    monkeypatch.setattr(fetch.urllib.request, "urlopen", urlopen)
    if isinstance(error, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            fetch.fetch_dataset(quiet=True)
    else:
        with pytest.raises(DataError, match=rf"could not download .*set \${fetch.MIRROR_ENV}"):
            fetch.fetch_dataset(quiet=True)
    assert calls == [fetch.DATA_URL]
    assert listing(data) == expected and not fetch.dataset_ready(data)
