"""Set-up: fetch everything the notebooks, tests and tools need, checked, atomically.

    python fetch_data.py            # dataset into data/, course photos into images/course/,
                                    # 300-W crops when a mirror has them
    python fetch_data.py --check    # only check data/

The course dataset comes from its official URL; with ``FKP_DATA_MIRROR`` set to a folder
holding ``train-test-data.zip`` it is copied from there instead (``FKP_IMAGES_MIRROR`` likewise
for the course photos; by default ``$FKP_DATA_MIRROR/../images`` is tried). Every download goes
to a temporary file and every archive is extracted into a temporary folder, checked, and only
then moved into place: an interrupted set-up leaves ``data/`` as it was, and a second run is a
no-op.
"""
from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from facial_keypoints.data.course import SPLITS, DataError, _far_outside, read_keypoints_csv
from facial_keypoints.files import atomic_folder, atomic_path, atomic_write_text
from facial_keypoints.images import load_image
from facial_keypoints.paths import COURSE_IMAGES_DIR, DATA_DIR

DATA_URL = ("https://s3.amazonaws.com/video.udacity-data.com/topher/2018/May/"
            "5aea1b91_train-test-data/train-test-data.zip")


DATA_ZIP = "train-test-data.zip"


IMAGES_URL = "https://raw.githubusercontent.com/udacity/P1_Facial_Keypoints/master/images/"


COURSE_IMAGES = ("obamas.jpg", "the_beatles.jpg", "mona_lisa.jpg", "sunglasses.png",
                 "moustache.png", "straw_hat.png", "landmarks_numbered.jpg")


MIRROR_ENV = "FKP_DATA_MIRROR"


IMAGES_MIRROR_ENV = "FKP_IMAGES_MIRROR"


COMPLETE_MARKER = ".complete"


W300_NAME = "300w_train"


def _mirror_dir(env, fallback=None):
    value = os.environ.get(env)
    if value:
        path = Path(value).expanduser()
        if not path.is_dir():
            raise DataError(f"${env} is set to {value!r}, which is not a folder. Point it at the "
                            f"folder that holds the mirrored files, or unset it to download.")
        return path
    return fallback


def _download(url, dest: Path, desc, quiet=False):
    """Download ``url`` to ``dest`` through a temporary file, renamed only when complete."""
    try:
        with atomic_path(dest) as part, urllib.request.urlopen(url, timeout=60) as response, \
                open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc,
                      disable=quiet or None) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as e:  # incl. a cut connection
        raise DataError(f"could not download {url} ({e}). With no internet, set "
                        f"${MIRROR_ENV} to a folder holding {DATA_ZIP}.") from None


def check_dataset(folder) -> list:
    """What is wrong with the dataset in ``folder``; an empty list when it is complete."""
    folder = Path(folder)
    problems = []
    for csv_name, image_dir, rows in SPLITS.values():
        try:
            frame = read_keypoints_csv(folder / csv_name)
        except DataError as e:
            problems.append(str(e))
            continue
        if len(frame) != rows:
            problems.append(f"{csv_name}: {len(frame)} rows, expected {rows}")
        missing = [n for n in frame.iloc[:, 0] if not (folder / image_dir / n).is_file()]
        if missing:
            problems.append(f"{image_dir}/: {len(missing)} image(s) listed in {csv_name} are "
                            f"missing, e.g. {missing[0]}")
        problems += _check_rows(folder, csv_name, image_dir, frame, set(missing))
    return problems


def _check_rows(folder, csv_name, image_dir, frame, missing):
    """Problems with the rows whose image is there: unreadable images, keypoints far outside."""
    coords = frame.iloc[:, 1:].to_numpy(dtype=np.float64).reshape(len(frame), -1, 2)
    unreadable, far = [], []
    for i, name in enumerate(frame.iloc[:, 0]):
        if name in missing:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(folder / image_dir / name) as im:  # the header only: fast
                    width, height = im.size
        except Exception:
            unreadable.append(name)
            continue
        if _far_outside(coords[i], width, height).any():
            far.append((i + 2, name))
    problems = []
    if unreadable:
        problems.append(f"{image_dir}/: {len(unreadable)} image(s) listed in {csv_name} cannot "
                        f"be read, e.g. {unreadable[0]}")
    if far:
        lines = ", ".join(str(line) for line, _ in far[:5])
        problems.append(f"{csv_name}: {len(far)} row(s) have keypoints far outside their image "
                        f"(line {lines}), e.g. {far[0][1]}; fix or remove them")
    return problems


def dataset_ready(data_dir=None) -> bool:
    data_dir = Path(data_dir or DATA_DIR)
    return (data_dir / COMPLETE_MARKER).is_file()


def fetch_dataset(data_dir=None, quiet=False) -> Path:
    """Fill ``data_dir`` (default data/) with the course dataset; a no-op when it is there.

    The zip comes from ``$FKP_DATA_MIRROR`` when set, else from the official URL. It is
    extracted into a temporary folder next to ``data_dir``, checked, and only then moved into
    place, so an interrupted or corrupt download never leaves a half dataset behind.
    """
    data_dir = Path(data_dir or DATA_DIR)
    if dataset_ready(data_dir):
        if not quiet:
            print(f"dataset already in {data_dir}")
        return data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    mirror = _mirror_dir(MIRROR_ENV)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=data_dir) as tmp:
        tmp = Path(tmp)
        if mirror is not None:
            zip_path = mirror / DATA_ZIP
            if not zip_path.is_file():
                raise DataError(f"${MIRROR_ENV}={mirror} has no {DATA_ZIP}. Point it at the "
                                f"folder that holds the zip, or unset it to download.")
            if not quiet:
                print(f"using the mirror {zip_path}")
        else:
            zip_path = tmp / DATA_ZIP
            _download(DATA_URL, zip_path, DATA_ZIP, quiet)
        staging = tmp / "staging"
        try:
            with zipfile.ZipFile(zip_path) as z:
                members = [m for m in z.infolist() if not m.filename.startswith("__MACOSX")]
                for m in tqdm(members, desc="extracting", unit="file", disable=quiet or None):
                    z.extract(m, staging)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
            raise DataError(f"{zip_path} is not a complete zip ({e}). Delete it and run set-up "
                            f"again.") from None
        problems = check_dataset(staging)
        if problems:
            raise DataError(f"{zip_path} does not hold the expected dataset: "
                            + "; ".join(problems))
        # Move into place: stale pieces of an earlier, unfinished set-up are replaced.
        for csv_name, image_dir, _ in SPLITS.values():
            for name in (csv_name, image_dir):
                target = data_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                os.replace(staging / name, target)
    atomic_write_text(data_dir / COMPLETE_MARKER, f"{DATA_ZIP}\n")
    if not quiet:
        print(f"dataset ready in {data_dir}")
    return data_dir


def fetch_course_images(dest=None, quiet=False) -> Path:
    """Fetch the course's sample photos and overlay art into ``dest`` (default images/course/)."""
    dest = Path(dest or COURSE_IMAGES_DIR)
    dest.mkdir(parents=True, exist_ok=True)
    data_mirror = _mirror_dir(MIRROR_ENV)
    fallback = data_mirror.parent / "images" if data_mirror is not None else None
    mirror = _mirror_dir(IMAGES_MIRROR_ENV, fallback)
    for name in COURSE_IMAGES:
        target = dest / name
        if target.is_file():
            continue
        if mirror is not None and (mirror / name).is_file():
            with atomic_path(target) as tmp:
                shutil.copyfile(mirror / name, tmp)
        else:
            _download(IMAGES_URL + name, target, name, quiet)
        load_image(target)  # a clear error now rather than later if it is not an image
    if not quiet:
        print(f"course images ready in {dest}")
    return dest


#: The 300-W crop folders a mirror may hold (``$FKP_DATA_MIRROR/<name>``): training crops
#: (LFPW and HELEN train), more training crops (AFW), the same AFW faces in their whole photos
#: (group pictures, one row per labelled face) and test crops (LFPW and HELEN test: for
#: testing only).
W300_SETS = (W300_NAME, "300w_afw", "300w_afw_photos", "300w_test")


def fetch_300w(data_dir=None, quiet=False, name=W300_NAME):
    """Copy 300-W crops (``<name>/``: images/ + keypoints.csv) from the mirror into data/.

    300-W has no public download URL that fits this layout (its publishers distribute it under
    their own terms), so it comes only from ``$FKP_DATA_MIRROR/<name>`` — see its README for
    provenance and terms: never commit or redistribute it. Returns the folder, or ``None`` when
    no mirror holds it. Copied through a staging folder, moved into place when complete.
    """
    dest = Path(data_dir or DATA_DIR) / name
    if (dest / COMPLETE_MARKER).is_file():
        return dest
    mirror = _mirror_dir(MIRROR_ENV)
    source = mirror / name if mirror is not None else None
    if source is None or not (source / "keypoints.csv").is_file():
        if not quiet:
            print(f"300-W crops not available (no ${MIRROR_ENV}/{name}); skipped")
        return None
    with atomic_folder(dest) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        frame = read_keypoints_csv(staging / "keypoints.csv")
        missing = [n for n in frame.iloc[:, 0] if not (staging / "images" / n).is_file()]
        if missing:
            raise DataError(f"{source}: {len(missing)} image(s) listed in keypoints.csv are "
                            f"missing, e.g. {missing[0]}")
        (staging / COMPLETE_MARKER).write_text(f"{name}\n")
    if not quiet:
        print(f"300-W crops ready in {dest}")
    return dest
