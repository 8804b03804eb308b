"""Bad input and interruptions: everything a user can hand the project ends in a result or a
clear, actionable error -- never a traceback from deep inside a library, never a silent wrong
answer, never lost work.

Four tables, one parametrised test each, every case named by its id:

* ``IMAGE_CASES``: each image goes through the Python API (``KeypointPipeline.get_landmarks``)
  and through the command (``python detect.py ... --json out.json --quiet``, a real subprocess).
  To pay for only two interpreter starts, the command runs once over all the cases that must be
  read (exit status 0: none of them may fail) and once over all the cases that must fail (exit
  status 1, an "error" for each). The command's contract is "exit 1 if and only if some entry
  has an error", so each case alone would exit as its group does.
* ``MODEL_CASES``: unusable ``--model`` files, through the API and the command (exit 2).
* ``DATA_CASES`` and ``MIRROR_CASES``: keypoint CSVs, image folders and the data set-up, through
  ``data_load`` (the dataset, ``check_dataset``, ``fetch_dataset``, ``main``).
* Interruptions: a training run killed mid-epoch and resumed; a shipped-model copy and a
  download interrupted half-way.

Lower-level checks that the other test files already make (test_models' checkpoint errors,
test_data_load's CSV errors, test_detect's command contract) are not repeated: these tests go
through the entry points a user touches.
"""
from __future__ import annotations

import csv
import http.client
import io
import json
import os
import queue
import re
import struct
import subprocess
import sys
import threading
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import models
from conftest import FAKE_SPLITS, face_layout, write_keypoints_csv
from facial_keypoints import images, landmarks
from facial_keypoints.cli import fetch_data as fetch_data_cmd
from facial_keypoints.cli import train as train_cmd
from facial_keypoints.data import course, fetch
from facial_keypoints.data.course import DataError
from facial_keypoints.detection import haar
from facial_keypoints.images import ImageReadError
from facial_keypoints.keypoints import checkpoints, nets, pipeline
from facial_keypoints.keypoints.runtime import ModelLoadError
from facial_keypoints.training import ship, transforms
from helpers_keypoints import ASTRONAUT, ASTRONAUT_BOX, ROOT, iou, make_tiny_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop(fetch.MIRROR_ENV, None)


def run_py(*args, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def listing(folder):
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("bad_input_ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def astronaut():
    return images.load_image(ASTRONAUT)


# ============================================================================================
# Images
# ============================================================================================
BIG_SIDE, BIG_SCALE, BIG_AT = 10_000, 8, (3000, 2000)   # the astronaut x8 pasted at (x, y)


class SpyHaar(haar.HaarFaceDetector):
    """The default Haar detector, recording the size of every image the cascades scan."""

    def __init__(self):
        super().__init__()
        self.scanned = []

    def _run(self, cascade, gray, *args):
        self.scanned.append(gray.shape)
        return super()._run(cascade, gray, *args)


def _pil(arr_or_image):
    return arr_or_image if isinstance(arr_or_image, Image.Image) else Image.fromarray(arr_or_image)


def _encode(image, fmt, **kw):
    buf = io.BytesIO()
    _pil(image).save(buf, fmt, **kw)
    return buf.getvalue()


def png_claiming_size(width, height):
    """A 1x1 PNG whose header says ``width`` x ``height`` (a decompression bomb's header)."""
    data = bytearray(_encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def exif_rotated(upright):
    """A JPEG storing ``upright`` turned 90 degrees, with EXIF orientation 6 to turn it back."""
    im = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))
    exif = im.getexif()
    exif[0x0112] = 6
    return _encode(im, "JPEG", exif=exif, quality=95)


def big_photo():
    canvas = np.full((BIG_SIDE, BIG_SIDE, 3), 120, np.uint8)
    face = cv2.resize(images.load_image(ASTRONAUT), None, fx=BIG_SCALE, fy=BIG_SCALE,
                      interpolation=cv2.INTER_LINEAR)
    x, y = BIG_AT
    canvas[y:y + face.shape[0], x:x + face.shape[1]] = face
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return enc.tobytes()


def mean_abs_diff(a, b):
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@dataclass
class ImageCase:
    id: str
    name: str                            # file name (under the case's own folder)
    content: Callable                    # astronaut array -> bytes of the file (None: absent)
    error: str | None = None             # regex the error must match; None: read fine
    shape: tuple | None = None           # (H, W) of the array read
    faces: int | None = None             # number of faces found (None: any)
    box: tuple | None = None             # a face that must be among those found (x, y, w, h)
    pixels: Callable | None = None       # (array read, astronaut) -> assert the pixels
    notes: str = ""


def _same_gray(img, astro):
    gray = np.asarray(Image.fromarray(astro).convert("L"))
    assert np.array_equal(img, np.dstack([gray] * 3))


def _near(expected_of_astro, tol):
    def check(img, astro):
        assert mean_abs_diff(img, expected_of_astro(astro)) < tol
    return check


def _exact(expected_of_astro):
    def check(img, astro):
        assert np.array_equal(img, expected_of_astro(astro))
    return check


def _palette(astro):
    return Image.fromarray(astro).convert("P", palette=Image.Palette.ADAPTIVE)


def _rgba(astro):
    return np.dstack([astro, np.full(astro.shape[:2], 100, np.uint8)])


def _gray16(astro):
    return np.asarray(Image.fromarray(astro).convert("L")).astype(np.uint16) * 257


def _coffee():
    return skimage.data.coffee()  # a public-domain photo of a cup of coffee: no face


def _cut(astro):
    return np.ascontiguousarray(astro[:, 200:])   # the face (x 176..273) loses a quarter


ASTRO_FACE = tuple(ASTRONAUT_BOX)
IMAGE_CASES = [
    # -- files that are not (whole) images: a clear error naming the file and the reason --
    ImageCase("empty-file", "empty.jpg", lambda a: b"", error=r"not a readable image"),
    ImageCase("truncated-jpeg", "cut.jpg", lambda a: _encode(a, "JPEG")[:9000],
              error=r"not a readable image \(image file is truncated"),
    ImageCase("truncated-png", "cut.png", lambda a: _encode(a, "PNG")[:5000],
              error=r"not a readable image"),
    ImageCase("text-named-jpg", "notes.jpg", lambda a: b"Dear diary,\nno picture here.\n",
              error=r"not a readable image \(cannot identify image file"),
    ImageCase("header-claims-20000x20000", "bomb.png", lambda a: png_claiming_size(20000, 20000),
              error=r"image too large to read safely .*downscale it first",
              notes="400 MP: over Pillow's decompression-bomb limit (179 MP)"),
    ImageCase("path-does-not-exist", "missing.jpg", None, error=r"no such file"),
    ImageCase("directory-mix", "folder", None, error=r"is a folder, not an image",
              notes="the API takes one image; the command expands the folder (see below)"),
    # -- odd but valid images: read, upright, RGB; a face where there is one --
    ImageCase("1x1", "one.png", lambda a: _encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
              shape=(1, 1), faces=0),
    ImageCase("10x10", "ten.png", lambda a: _encode(np.full((10, 10, 3), 77, np.uint8), "PNG"),
              shape=(10, 10), faces=0),
    ImageCase("10000x10000", "big.jpg", lambda a: big_photo(), shape=(BIG_SIDE, BIG_SIDE),
              box=tuple(ASTRONAUT_BOX * BIG_SCALE + [*BIG_AT, 0, 0]),
              notes="100 MP: above Pillow's 89 MP warning, read without a warning"),
    ImageCase("grayscale", "gray.png", lambda a: _encode(Image.fromarray(a).convert("L"), "PNG"),
              shape=(512, 512), box=ASTRO_FACE, pixels=_same_gray),
    ImageCase("rgba", "rgba.png", lambda a: _encode(_rgba(a), "PNG"), shape=(512, 512),
              box=ASTRO_FACE, pixels=_exact(lambda a: a), notes="alpha dropped"),
    ImageCase("palette", "palette.png", lambda a: _encode(_palette(a), "PNG"), shape=(512, 512),
              box=ASTRO_FACE,
              pixels=_exact(lambda a: np.asarray(_palette(a).convert("RGB")))),
    ImageCase("16-bit-png", "gray16.png", lambda a: _encode(_gray16(a), "PNG"), shape=(512, 512),
              box=ASTRO_FACE, pixels=_same_gray, notes="65535 -> 255, not clipped"),
    ImageCase("cmyk-jpeg", "cmyk.jpg",
              lambda a: _encode(Image.fromarray(a).convert("CMYK"), "JPEG", quality=95),
              shape=(512, 512), box=ASTRO_FACE, pixels=_near(lambda a: a, 6.0)),
    ImageCase("exif-rotated-jpeg", "rotated.jpg", lambda a: exif_rotated(a[:, :400]),
              shape=(512, 400), box=ASTRO_FACE, pixels=_near(lambda a: a[:, :400], 4.0),
              notes="stored turned 90 degrees: read upright"),
    ImageCase("all-black", "black.png", lambda a: _encode(np.zeros((200, 300, 3), np.uint8), "PNG"),
              shape=(200, 300), faces=0),
    ImageCase("photo-without-a-face", "coffee.jpg", lambda a: _encode(_coffee(), "JPEG"),
              shape=(400, 600), faces=0),
    ImageCase("face-cut-by-the-border", "cut_face.png", lambda a: _encode(_cut(a), "PNG"),
              shape=(512, 312), box=None,
              notes="found; its box reaches past the left border"),
    ImageCase("path-with-spaces-and-non-ascii", "dossier été/visage de Zoë 顔.png",
              lambda a: _encode(a, "PNG"), shape=(512, 512), box=ASTRO_FACE),
]
CASE_BY_ID = {c.id: c for c in IMAGE_CASES}
assert len(CASE_BY_ID) == len(IMAGE_CASES)

#: The folder of the 'directory-mix' case: file -> None (read fine) or the error's regex.
FOLDER_FILES = {
    "a_face.jpg": None,
    "b_gray.png": None,
    "c_notes.jpg": r"not a readable image",
    "d_empty.png": r"not a readable image",
    "e_cut.png": r"not a readable image",
}


@pytest.fixture(scope="module")
def image_inputs(tmp_path_factory, astronaut):
    """Every case's input on disk: case id -> path (as a string, as a user would type it)."""
    root = tmp_path_factory.mktemp("images")
    paths = {}
    for case in IMAGE_CASES:
        path = root / case.id / case.name
        path.parent.mkdir(parents=True, exist_ok=True)
        if case.content is not None:
            path.write_bytes(case.content(astronaut))
        paths[case.id] = str(path)
    folder = Path(paths["directory-mix"])
    folder.mkdir()
    (folder / "a_face.jpg").write_bytes(_encode(astronaut, "JPEG"))
    (folder / "b_gray.png").write_bytes(_encode(Image.fromarray(astronaut).convert("L"), "PNG"))
    (folder / "c_notes.jpg").write_text("not a picture")
    (folder / "d_empty.png").write_bytes(b"")
    (folder / "e_cut.png").write_bytes(_encode(astronaut, "PNG")[:3000])
    (folder / "readme.txt").write_text("not an image file name: skipped by the command")
    return paths


@pytest.fixture(scope="module")
def cli_runs(image_inputs, tiny_ckpt, tmp_path_factory):
    """The command, run once over the cases that must be read and once over those that must
    fail: group -> (process, JSON result, {path: [entries]})."""
    out = tmp_path_factory.mktemp("cli")
    runs = {}
    for group in ("readable", "failing"):
        cases = [c for c in IMAGE_CASES if (c.error is None) == (group == "readable")]
        out_json = out / f"{group}.json"
        t0 = time.perf_counter()
        proc = run_py("detect.py", *(image_inputs[c.id] for c in cases), "--json", out_json,
                      "--model", tiny_ckpt, "--detector", "haar", "--quiet")
        seconds = time.perf_counter() - t0
        assert out_json.is_file(), proc.stderr
        result = json.loads(out_json.read_text())
        by_path = {}
        for entry in result["images"]:
            by_path.setdefault(entry["path"], []).append(entry)
        runs[group] = {"proc": proc, "result": result, "by_path": by_path, "seconds": seconds}
    return runs


@pytest.fixture(scope="module")
def spy_detector(tiny_ckpt):
    return pipeline.KeypointPipeline(tiny_ckpt, detector=SpyHaar())


def pillow_warnings(records):
    return [w for w in records if issubclass(w.category, Image.DecompressionBombWarning)
            or f"{os.sep}PIL{os.sep}" in w.filename]


def check_faces(faces, case, image_shape):
    assert isinstance(faces, list)
    if case.faces is not None:
        assert len(faces) == case.faces, [f.box for f in faces]
    for face in faces:
        assert face.keypoints.shape == (68, 2) and np.isfinite(face.keypoints).all()
        assert face.box.shape == (4,) and (face.box[2:] > 0).all()
    if case.box is not None:   # found (the detector may add a false box elsewhere)
        assert max((iou(f.box, case.box) for f in faces), default=0) > 0.75, \
            ([f.box for f in faces], case.box)
    if case.id == "face-cut-by-the-border":  # found although cut: it starts left of the image
        assert any(f.box[0] < 0 and f.box[1] < 100 for f in faces), [f.box for f in faces]


@pytest.mark.slow
@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c.id)
def test_image_case(case, image_inputs, spy_detector, cli_runs, astronaut):
    path = image_inputs[case.id]
    # -- the API --------------------------------------------------------------------------
    spy_detector.detector.scanned.clear()
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        t0 = time.process_time()
        if case.error:
            with pytest.raises(ImageReadError) as err:
                spy_detector.get_landmarks(path)
            message = str(err.value)
            assert message.startswith(path) and re.search(case.error, message), message
            assert "\n" not in message
        else:
            faces = spy_detector.get_landmarks(path)
            cpu = time.process_time() - t0
            image = images.load_image(path)
            assert image.shape == (*case.shape, 3) and image.dtype == np.uint8
            check_faces(faces, case, image.shape)
            if case.pixels:
                case.pixels(image, astronaut)
            # Detection runs at a bounded working size (big images downscaled to work_max px,
            # plus a border): a 100 MP photo stays fast.
            haar = spy_detector.detector
            for shape in haar.scanned:
                assert max(shape) <= haar.work_max * (1 + 2 * haar.pad) + 2, shape
            if case.id == "10000x10000":
                print(f"\n10000x10000 JPEG through the API: {cpu:.1f} s CPU")
                assert cpu < 30, f"{cpu:.1f} s of CPU for one 100 MP photo"
    assert pillow_warnings(records) == [], [str(w.message) for w in records]

    # -- the command ----------------------------------------------------------------------
    run = cli_runs["readable" if case.error is None else "failing"]
    proc = run["proc"]
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == (0 if case.error is None else 1), proc.stderr[-3000:]
    if case.id == "directory-mix":
        for name, error in FOLDER_FILES.items():
            (entry,) = run["by_path"][str(Path(path) / name)]
            if error is None:
                assert entry["error"] is None and len(entry["faces"]) >= 1
            else:
                assert entry["error"].startswith(str(Path(path) / name))
                assert re.search(error, entry["error"]) and entry["faces"] == []
        assert str(Path(path) / "readme.txt") not in run["by_path"]
        return
    (entry,) = run["by_path"][path]
    if case.error:
        assert isinstance(entry["error"], str) and entry["error"].startswith(path)
        assert re.search(case.error, entry["error"]), entry["error"]
        assert entry["faces"] == [] and entry["width"] is None and entry["height"] is None
    else:
        assert entry["error"] is None
        assert (entry["height"], entry["width"]) == case.shape
        # the same faces as through the API
        assert [f["box"] for f in entry["faces"]] == [[round(float(v), 1) for v in f.box]
                                                      for f in faces]
        for face in entry["faces"]:
            assert len(face["keypoints"]) == 68 and np.isfinite(face["keypoints"]).all()


def test_image_cases_cover_the_issue():
    """Every kind of image the issue lists has its row in the table."""
    assert {"empty-file", "truncated-jpeg", "truncated-png", "text-named-jpg", "1x1", "10x10",
            "10000x10000", "grayscale", "rgba", "palette", "16-bit-png", "cmyk-jpeg",
            "exif-rotated-jpeg", "all-black", "photo-without-a-face", "face-cut-by-the-border",
            "directory-mix", "path-does-not-exist",
            "path-with-spaces-and-non-ascii"} <= set(CASE_BY_ID)


def test_command_gives_one_entry_per_image(cli_runs, image_inputs):
    """Each image of the two runs has exactly one entry, in the order given (the folder's
    images in name order, its readme.txt left out)."""
    for group, run in cli_runs.items():
        expected = []
        for case in IMAGE_CASES:
            if (case.error is None) != (group == "readable"):
                continue
            path = image_inputs[case.id]
            expected += ([str(Path(path) / name) for name in FOLDER_FILES]
                         if case.id == "directory-mix" else [path])
        assert [e["path"] for e in run["result"]["images"]] == expected
        print(f"\ndetect.py over the {group} cases: {run['seconds']:.1f} s")


# ============================================================================================
# Models
# ============================================================================================
def _meta(arch, arch_args, input_size):
    return checkpoints.checkpoint_meta(arch, arch_args, input_size, 1.3, input_size / 2,
                                  input_size / 4, command="tests")


def _write_model_case(kind, path, tiny_ckpt):
    if kind == "missing":
        return
    if kind == "corrupt":
        data = Path(tiny_ckpt).read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "other-architecture":   # the course Net's weights, described as a ResNet
        checkpoints.save_checkpoint(path, models.Net(input_size=64),
                                    _meta("resnet18", {"width": 8}, 64))
    elif kind == "other-input-size":     # a Net trained on 96-px crops, described as 64 px
        checkpoints.save_checkpoint(path, models.Net(input_size=96),
                               _meta("net", {"input_size": 64}, 64))
    elif kind == "old-format-bare-state-dict":
        torch.save(nets.ResNet18Keypoints(width=8).state_dict(), path)
    elif kind == "old-format-no-description":   # weights and architecture, nothing else
        torch.save({"arch": "resnet18", "arch_args": {"width": 8},
                    "state_dict": nets.ResNet18Keypoints(width=8).state_dict()}, path)
    else:
        raise AssertionError(kind)


MODEL_CASES = {
    "missing": r"no such weights file\. Pass --model with the path of a checkpoint",
    "corrupt": r"not a readable PyTorch checkpoint .*damaged or incomplete",
    "other-architecture": r"do not fit a ResNet18Keypoints .*another architecture",
    "other-input-size": r"do not fit a Net .*input size",
    "old-format-bare-state-dict": r"bare state dict .*models\.save_checkpoint",
    "old-format-no-description": r"older or damaged checkpoint format.*save_checkpoint",
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MODEL_CASES))
def test_model_case(kind, tmp_path, tiny_ckpt):
    path = tmp_path / f"{kind}.pt"
    _write_model_case(kind, path, tiny_ckpt)
    with pytest.raises(ModelLoadError) as err:
        pipeline.KeypointPipeline(path)
    message = str(err.value)
    assert message.startswith(str(path)) and re.search(MODEL_CASES[kind], message), message
    out_json = tmp_path / "out.json"
    proc = run_py("detect.py", ASTRONAUT, "--model", path, "--json", out_json, "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"detect.py: error: {message}", proc.stderr
    assert not out_json.exists()


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
        z.writestr("obamas.jpg", _encode(np.zeros((8, 8, 3), np.uint8), "JPEG"))


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


@pytest.mark.parametrize("damage", ["truncated", "other-width"])
def test_resume_from_an_unusable_last_checkpoint(training_data, tmp_path, damage, capsys):
    out = tmp_path / "run"
    out.mkdir()
    if damage == "truncated":
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
