"""Shared set-up for the unit tests: one CPU thread, synthetic images and data.

The project's modules are importable through pytest's ``pythonpath`` (pyproject.toml).
"""
from __future__ import annotations

import collections
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facial_keypoints import images, landmarks
from facial_keypoints.data import course, fetch
from facial_keypoints.paths import DEFAULT_PHOTO
from helpers_keypoints import make_tiny_checkpoint

# Other work (a training run) shares this machine: keep the tests on one thread.
torch.set_num_threads(1)


#: How many examples the fuzz tests ran, by kind (test_fuzz.py counts; the summary reports).
FUZZ_COUNTS = collections.Counter()


def pytest_terminal_summary(terminalreporter):
    """Report the fuzz tests' example counts, and say loudly when tests were skipped for want
    of set-up's data or of optional packages: a green run without ``data/`` is not a full one."""
    if FUZZ_COUNTS:
        terminalreporter.write_line("fuzz examples: " + ", ".join(
            f"{k} {v}" for k, v in sorted(FUZZ_COUNTS.items())))
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.section("NOT EVERYTHING WAS TESTED", sep="!", red=True, bold=True)
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{n:4d} test(s) skipped: {reason}", red=True, bold=True)

# A real face layout (the first row of the course's training CSV), so that the tests do not
# need the dataset.
FACE_ROW = landmarks.FACE_LAYOUT

#: Synthetic image size (height, width): not square, so that x/y mix-ups show.
IMG_H, IMG_W = 200, 180

#: A few points drawn in their own colour, to check that an index lands on *its* dot.
#: Outer eye corners, jaw ends, mouth corners: three mirror pairs.
MARKER_COLORS = {36: (255, 0, 0), 45: (0, 255, 0), 0: (0, 0, 255), 16: (255, 255, 0),
                 48: (0, 255, 255), 54: (255, 0, 255)}


def face_layout(center=(IMG_W / 2, IMG_H / 2), width=100.0) -> np.ndarray:
    """The real face layout scaled to ``width`` px and centred at ``center`` (float32, 68x2)."""
    pts = np.asarray(FACE_ROW, dtype=np.float64)
    lo, hi = pts.min(0), pts.max(0)
    pts = (pts - (lo + hi) / 2) * (width / (hi - lo)[0]) + np.asarray(center)
    return pts.astype(np.float32)


def sparse_layout(seed=0) -> np.ndarray:
    """68 points on a jittered 8x9 grid, about 20 px apart: every dot stands alone."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(22, IMG_W - 22, 8)
    ys = np.linspace(22, IMG_H - 22, 9)
    grid = np.array([(x, y) for y in ys for x in xs])[:68]
    return (grid + rng.uniform(-3.5, 3.5, grid.shape)).astype(np.float32)


def draw_dots(points, shape=(IMG_H, IMG_W), radius=2.5, colors=None, value=255):
    """Black RGB uint8 image with a filled, anti-aliased disc centred on each point.

    Pixel-centre coordinates: pixel (row i, column j) is the point (x=j, y=i), so each disc's
    centre of mass is its point. ``colors`` maps an index to an RGB colour (drawn last, on
    top); every other dot gets ``value`` (an int or an RGB triple).
    """
    h, w = shape
    img = np.zeros((h, w, 3), np.float64)
    colors = colors or {}
    order = [i for i in range(len(points)) if i not in colors] + list(colors)
    reach = int(np.ceil(radius)) + 2
    for i in order:
        x, y = (float(v) for v in points[i])
        x0, x1 = max(0, int(x) - reach), min(w, int(x) + reach + 1)
        y0, y1 = max(0, int(y) - reach), min(h, int(y) + reach + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        cover = np.clip(radius + 0.5 - np.hypot(xx - x, yy - y), 0.0, 1.0)[:, :, None]
        color = np.broadcast_to(np.asarray(colors.get(i, value), np.float64), (3,))
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - cover) + cover * color
    return np.round(img).astype(np.uint8)


def _frozen(sample):
    for v in sample.values():
        v.flags.writeable = False  # a transform that writes into its input fails loudly
    return sample


@pytest.fixture(scope="session")
def face_points():
    return _frozen({"k": face_layout()})["k"]


@pytest.fixture(scope="session")
def face_sample(face_points):
    """A synthetic 'face': a bright dot at each of the 68 points, six of them coloured."""
    return _frozen({"image": draw_dots(face_points, colors=MARKER_COLORS),
                    "keypoints": face_points})


@pytest.fixture(scope="session")
def sparse_sample():
    """68 lone dots (radius 3) on a jittered grid."""
    pts = sparse_layout()
    return _frozen({"image": draw_dots(pts, radius=3.0), "keypoints": pts})


# --------------------------------------------------------------------------------------------
# Tiny data sets on disk
# --------------------------------------------------------------------------------------------
def write_keypoints_csv(path, names, points_list):
    """A keypoint CSV in the course layout (unnamed index column of file names, 136 columns)."""
    header = "," + ",".join(str(i) for i in range(2 * landmarks.N_KEYPOINTS))
    lines = [header]
    for name, pts in zip(names, points_list):
        flat = np.asarray(pts, dtype=np.float64).reshape(-1)
        lines.append(name + "," + ",".join(f"{v:g}" for v in flat))
    Path(path).write_text("\n".join(lines) + "\n")


def make_image_file(path, seed=0, size=(40, 32)):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG" if str(path).endswith(".jpg") else None)
    return arr


PEOPLE = ["Luis_Fonsi", "Ann_Lee", "Bo_Diddley", "Carla_Bruni", "Dan_Brown", "Eve_Ensler"]


def dataset_names(n_per_person=3, people=PEOPLE):
    return [f"{p}_{k:02d}.jpg" for p in people for k in range(n_per_person)]


@pytest.fixture
def fake_dataset(tmp_path):
    """A folder with 18 small JPEGs (six people, three frames each) and their keypoint CSV."""
    root = tmp_path / "fake"
    images = root / "images"
    images.mkdir(parents=True)
    names = dataset_names()
    rng = np.random.default_rng(1)
    points = [face_layout(width=30, center=(20, 16)) + rng.normal(0, 0.5, (68, 2))
              for _ in names]
    for i, name in enumerate(names):
        make_image_file(images / name, seed=i)
    csv = root / "keypoints.csv"
    write_keypoints_csv(csv, names, points)
    return {"root": root, "csv": csv, "images": images, "names": names,
            "points": np.asarray(points, dtype=np.float32)}


#: Row counts of the fake train-test-data.zip (to put into data_load.SPLITS).
FAKE_SPLITS = {"train": ("training_frames_keypoints.csv", "training", 4),
               "test": ("test_frames_keypoints.csv", "test", 2)}


def build_fake_zip(path, drop_image=None):
    """A train-test-data.zip laid out like the real one, with ``FAKE_SPLITS`` rows, written
    with deflate. ``drop_image``: a file name left out of the zip (its CSV row stays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        k = 0
        for csv_name, folder, rows in FAKE_SPLITS.values():
            names = [f"{PEOPLE[(k + i) % len(PEOPLE)]}_{k + i:02d}.jpg" for i in range(rows)]
            k += rows
            tmp_csv = path.parent / f".{csv_name}"
            write_keypoints_csv(tmp_csv, names, [face_layout(width=30, center=(20, 16))] * rows)
            z.write(tmp_csv, csv_name)
            tmp_csv.unlink()
            for i, name in enumerate(names):
                if name == drop_image:
                    continue
                arr = np.random.default_rng(k + i).integers(0, 256, (32, 40, 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="JPEG")
                z.writestr(f"{folder}/{name}", buf.getvalue())
        z.writestr("__MACOSX/._junk", b"resource fork")
    return path


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """``$FKP_DATA_MIRROR`` set to a folder with a small fake zip; ``SPLITS`` made to fit it."""
    mirror = tmp_path / "mirror"
    build_fake_zip(mirror / fetch.DATA_ZIP)
    monkeypatch.setattr(course, "SPLITS", FAKE_SPLITS)
    monkeypatch.setattr(fetch, "SPLITS", FAKE_SPLITS)
    monkeypatch.setenv(fetch.MIRROR_ENV, str(mirror))
    return mirror


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A tiny random model (helpers_keypoints.make_tiny_checkpoint), made once."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def astronaut():
    """The bundled photo as an RGB array."""
    return images.load_image(DEFAULT_PHOTO)

