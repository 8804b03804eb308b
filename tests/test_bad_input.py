"""Bad input: every image and model file a user can hand the project ends in a result or a
clear, actionable error -- never a traceback from deep inside a library, never a silent wrong
answer. Bad data, training inputs and interruptions are test_bad_data.py.

Four tables (two here, two there), one parametrised test each, every case named by its id:

* ``IMAGE_CASES``: each image goes through the Python API (``KeypointPipeline.get_landmarks``)
  and through the command (``python detect.py ... --json out.json --quiet``, a real subprocess).
  To pay for only two interpreter starts, the command runs once over all the cases that must be
  read (exit status 0: none of them may fail) and once over all the cases that must fail (exit
  status 1, an "error" for each). The command's contract is "exit 1 if and only if some entry
  has an error", so each case alone would exit as its group does.
* ``MODEL_CASES``: unusable ``--model`` files, through the API and the command (exit 2).
* (test_bad_data.py) ``DATA_CASES`` and ``MIRROR_CASES``: keypoint CSVs, image folders and the
  data set-up, through the dataset, ``check_dataset``, ``fetch_dataset`` and ``fkp-fetch-data``;
  interruptions: a training run killed mid-epoch and resumed; a shipped-model copy and a
  download interrupted half-way.

Lower-level checks that the other test files already make (test_models' checkpoint errors,
test_data's CSV errors, test_detect's command contract) are not repeated: these tests go
through the entry points a user touches.
"""
from __future__ import annotations

import io
import json
import os
import re
import struct
import time
import warnings
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
from facial_keypoints import images
from facial_keypoints.detection import haar
from facial_keypoints.images import ImageReadError
from facial_keypoints.keypoints import checkpoints, nets, pipeline
from facial_keypoints.keypoints.runtime import ModelLoadError
from helpers_keypoints import (
    ASTRONAUT,
    ASTRONAUT_BOX,
    iou,
    run_py,
)

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
    "old-format-bare-state-dict": r"bare state dict .*checkpoints\.save_checkpoint",
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


