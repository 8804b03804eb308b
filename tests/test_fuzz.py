"""Fuzz tests (hypothesis, derandomised so that CI runs the same examples every time) of image
reading and of detect.py:

(a) ``load_image`` on random bytes, random prefixes of valid files and valid files with a few
    bytes changed: an RGB ``uint8`` array (H, W, 3) or ``ImageReadError`` -- nothing else, and
    no warning from Pillow;
(b) valid images of random sizes (1..300 px a side), modes and formats: the array read has the
    image's size (and, for lossless formats, its pixels), and ``get_landmarks`` returns a list;
(c) one run of the command over a folder of 20 random files, valid images and random bytes.

Every test counts its examples in ``conftest.FUZZ_COUNTS``; the run's summary reports them.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import FUZZ_COUNTS
from facial_keypoints import images
from facial_keypoints.images import ImageReadError
from facial_keypoints.keypoints import pipeline
from helpers_keypoints import ROOT, make_tiny_checkpoint

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MODES = ["L", "LA", "RGB", "RGBA", "P", "I;16", "CMYK", "1"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}
LOSSLESS = {"PNG", "BMP", "TIFF"}


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("fuzz_ckpt") / "tiny.pt")
    return pipeline.KeypointPipeline(ckpt)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def rgb_content(kind, width, height, seed, astronaut):
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == "flat":
        return np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (height, width, 3)).copy()
    if kind == "gradient":
        ramp = np.linspace(0, 255, width, dtype=np.float64)[None, :, None]
        return np.broadcast_to(ramp * rng.uniform(0.2, 1, 3), (height, width, 3)).astype(np.uint8)
    return cv2.resize(astronaut, (width, height), interpolation=cv2.INTER_AREA)   # a face


def make_image(rgb, mode, seed=0):
    """The RGB array as a Pillow image of ``mode``."""
    alpha = np.random.default_rng(seed).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    if mode == "I;16":
        gray = np.asarray(Image.fromarray(rgb).convert("L")).astype(np.uint16) * 257
        return Image.fromarray(gray)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    if mode == "LA":
        gray = np.asarray(Image.fromarray(rgb).convert("L"))
        return Image.fromarray(np.dstack([gray, alpha]), "LA")
    return Image.fromarray(rgb).convert(mode)


def encode(image, fmt):
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def _can_save(fmt, mode):
    if mode == "CMYK" and fmt != "JPEG":
        return False   # CMYK files in the wild are JPEGs
    try:
        encode(make_image(np.zeros((2, 3, 3), np.uint8), mode), fmt)
        return True
    except (OSError, ValueError, KeyError):
        return False


#: Every (format, mode) that Pillow can write.
COMBOS = [(f, m) for f in FORMATS for m in MODES if _can_save(f, m)]


def expected_pixels(rgb, mode, fmt):
    """What a lossless file of ``mode`` must read back as, or None where not exact."""
    if fmt not in LOSSLESS:
        return None
    if mode in ("RGB", "RGBA"):
        return rgb      # alpha dropped
    if mode in ("L", "LA", "I;16"):
        gray = np.asarray(Image.fromarray(rgb).convert("L"))
        return np.dstack([gray] * 3)
    return None


def _valid_blobs():
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (23, 37, 3), dtype=np.uint8)
    blobs = [encode(make_image(rgb, m), f) for f, m in
             [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "I;16"), ("PNG", "P"), ("JPEG", "RGB"),
              ("JPEG", "CMYK"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB")]]
    im = Image.fromarray(rgb)                     # a JPEG with an EXIF orientation
    exif = im.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    return blobs + [buf.getvalue()]


VALID_BLOBS = _valid_blobs()


def _prefix(blob_and_cut):
    blob, cut = blob_and_cut
    return blob[: cut % (len(blob) + 1)]


def _damage(blob_and_edits):
    blob, edits = blob_and_edits
    data = bytearray(blob)
    for pos, value in edits:
        data[pos % len(data)] = value
    return bytes(data)


RANDOM_FILES = st.one_of(
    st.binary(max_size=4096),
    st.tuples(st.sampled_from(VALID_BLOBS), st.integers(0, 1 << 20)).map(_prefix),
    st.tuples(st.sampled_from(VALID_BLOBS),
              st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)),
                       min_size=1, max_size=6)).map(_damage),
)


def check_read(path):
    """``load_image(path)``: an RGB uint8 array, or ImageReadError naming the file; no
    warning. Returns the array or None."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        try:
            image = images.load_image(path)
        except ImageReadError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e), str(e)
            image = None
    assert not [w for w in records if f"{os.sep}PIL{os.sep}" in w.filename
                or issubclass(w.category, Image.DecompressionBombWarning)], \
        [str(w.message) for w in records]
    if image is not None:
        assert isinstance(image, np.ndarray) and image.dtype == np.uint8
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 1
    return image


# --------------------------------------------------------------------------------------------
# (a) load_image on random bytes
# --------------------------------------------------------------------------------------------
def test_load_image_on_random_bytes(work_dir):
    path = work_dir / "random.jpg"

    @FUZZ
    @given(data=RANDOM_FILES)
    def run(data):
        FUZZ_COUNTS["random bytes"] += 1
        path.write_bytes(data)
        if check_read(path) is None:
            FUZZ_COUNTS["random bytes: unreadable"] += 1

    run()
    assert FUZZ_COUNTS["random bytes"] >= 60


# --------------------------------------------------------------------------------------------
# (b) valid images of random sizes, modes and formats
# --------------------------------------------------------------------------------------------
def test_random_valid_images(work_dir, detector, astronaut):
    assert ("JPEG", "CMYK") in COMBOS and ("PNG", "I;16") in COMBOS and len(COMBOS) >= 20

    @FUZZ
    @given(width=st.integers(1, 300), height=st.integers(1, 300),
           combo=st.sampled_from(COMBOS),
           kind=st.sampled_from(["noise", "flat", "gradient", "face"]),
           seed=st.integers(0, 2**16))
    def run(width, height, combo, kind, seed):
        fmt, mode = combo
        FUZZ_COUNTS["valid images"] += 1
        rgb = rgb_content(kind, width, height, seed, astronaut)
        path = work_dir / f"image{FORMATS[fmt]}"
        path.write_bytes(encode(make_image(rgb, mode, seed), fmt))
        image = check_read(path)
        assert image is not None, f"a valid {fmt} {mode} {width}x{height} was not read"
        assert image.shape == (height, width, 3)
        expected = expected_pixels(rgb, mode, fmt)
        if expected is not None:
            assert np.array_equal(image, expected), f"{fmt} {mode}: pixels changed"
        faces = detector.get_landmarks(path)
        assert isinstance(faces, list)
        for face in faces:
            assert face.keypoints.shape == (68, 2) and np.isfinite(face.keypoints).all()
        FUZZ_COUNTS["valid images: faces found"] += len(faces)

    run()
    assert FUZZ_COUNTS["valid images"] >= 60


# --------------------------------------------------------------------------------------------
# (c) the command over a folder of random files
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_command_on_a_folder_of_random_files(work_dir, detector, astronaut):
    folder = work_dir / "folder"
    folder.mkdir()
    rng = np.random.default_rng(2024)
    expected = {}
    for k in range(20):
        if k % 2 == 0:   # a valid image
            fmt, mode = COMBOS[int(rng.integers(len(COMBOS)))]
            w, h = (int(v) for v in rng.integers(1, 301, 2))
            kind = ["noise", "flat", "gradient", "face"][k // 2 % 4]
            rgb = rgb_content(kind, w, h, k, astronaut)
            path = folder / f"{k:02d}_{mode.replace(';', '')}{FORMATS[fmt]}"
            path.write_bytes(encode(make_image(rgb, mode, k), fmt))
            expected[str(path)] = (w, h)
        else:            # random bytes, a damaged or cut file
            ext = [".jpg", ".png", ".gif", ".tif", ".bmp", ".mp4"][k // 2 % 6]
            blob = VALID_BLOBS[int(rng.integers(len(VALID_BLOBS)))]
            data = [rng.bytes(int(rng.integers(0, 3000))), blob[: len(blob) // 2],
                    _damage((blob, [(int(p), 0) for p in rng.integers(0, 1 << 20, 4)]))][k % 3]
            path = folder / f"{k:02d}_bytes{ext}"
            path.write_bytes(data)
            expected[str(path)] = None
    FUZZ_COUNTS["command: files"] += len(expected)
    out = work_dir / "out.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "detect.py", str(folder), "--json", str(out),
                           "--model", str(detector.model_path), "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    entries = json.loads(out.read_text())["images"]
    entries = [e for e in entries if e.get("frame") is None]       # not a video's frames
    assert [e["path"] for e in entries] == sorted(expected)        # one entry per file
    failed = False
    for entry in entries:
        size = expected[entry["path"]]
        if size is not None and entry["error"] is None:
            assert (entry["width"], entry["height"]) == size
        elif size is not None:
            pytest.fail(f"a valid image was not read: {entry['error']}")
        else:   # damaged files may still be readable (a changed pixel); if not, a clear error
            if entry["error"] is not None:
                assert entry["error"].startswith(entry["path"]) and entry["faces"] == []
        failed |= entry["error"] is not None
    assert proc.returncode == (1 if failed else 0)
    FUZZ_COUNTS["command: unreadable"] += sum(e["error"] is not None for e in entries)
