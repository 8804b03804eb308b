"""300-W: faces in the wild with the iBUG 68-point mark-up, in the course's crop-and-CSV layout.

* ``dataset_300w``: the crops in ``data/300w_train`` (copied from a mirror by ``data.fetch``)
  through the course's dataset class;
* ``split_300w`` / ``split_300w_files``: a held-out fifth, by photo (near-duplicates together);
* ``convert_300w``: 300-W as its publishers (iBUG) distribute it — images with ``.pts`` files —
  converted into the same layout::

      python -m facial_keypoints.cli.convert_300w lfpw=path/to/lfpw/trainset \
          helen=path/to/helen/trainset

The 300-W annotations are for non-commercial research use only: never commit or redistribute
them.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from facial_keypoints.data.course import DataError, FacialKeypointsDataset
from facial_keypoints.data.fetch import COMPLETE_MARKER, W300_NAME
from facial_keypoints.files import atomic_folder
from facial_keypoints.geometry import cut_window
from facial_keypoints.images import load_image
from facial_keypoints.landmarks import N_KEYPOINTS
from facial_keypoints.paths import DATA_DIR


def photo_groups_300w(filenames, readme=None) -> dict:
    """File name -> group, so that crops of one photo (``helen_<photo>_<k>``) and the
    near-duplicate groups listed in the folder's README stay on one side of a split."""
    group = {}
    for name in filenames:
        stem = Path(name).stem
        group[name] = stem.rsplit("_", 1)[0] if stem.startswith("helen_") else stem
    if readme is not None and Path(readme).is_file():
        by_stem = {Path(n).stem: n for n in filenames}
        for line in Path(readme).read_text(errors="replace").splitlines():
            if re.match(r"^\s*- (lfpw|helen)_\S+,", line):
                members = [by_stem[m.strip()] for m in line.strip()[2:].split(",")
                           if m.strip() in by_stem]
                for m in members[1:]:
                    old_group, new_group = group[m], group[members[0]]
                    for k, g in group.items():
                        if g == old_group:
                            group[k] = new_group
    return group


def split_300w(filenames, holdout_fraction=0.2, seed=0, readme=None):
    """(train names, held-out names) of the 300-W crops, by photo group (see
    ``photo_groups_300w``): the held-out faces measure what mixing 300-W into training buys."""
    group = photo_groups_300w(filenames, readme)
    groups = sorted(set(group.values()))
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(groups)[:int(round(holdout_fraction * len(groups)))])
    return ([n for n in filenames if group[n] not in held],
            [n for n in filenames if group[n] in held])


def split_300w_files(data_dir=None, holdout_fraction=0.2, seed=0):
    """``split_300w`` of the crops in ``data/300w_train`` (its README's duplicate groups kept
    together): (training names, held-out names)."""
    folder = Path(data_dir or DATA_DIR) / W300_NAME
    return split_300w(dataset_300w(data_dir=data_dir).filenames, holdout_fraction, seed,
                      readme=folder / "README.md")


def dataset_300w(transform=None, data_dir=None, name=W300_NAME, **kwargs):
    """300-W crops through the course's dataset class (same CSV layout): ``name`` is one of
    ``data.fetch.W300_SETS`` (``300w_train``, ``300w_afw``, ``300w_afw_photos``: one row per
    labelled face of a whole photo, ``300w_test``)."""
    folder = Path(data_dir or DATA_DIR) / name
    return FacialKeypointsDataset(folder / "keypoints.csv", folder / "images", transform, **kwargs)


# --------------------------------------------------------------------------------------------
# 300-W from its publishers: images + .pts files -> the crop-and-CSV layout above
# --------------------------------------------------------------------------------------------
W300_SIZE, W300_SCALE = 224, 2.0


def read_pts(path) -> np.ndarray:
    """The 68 points of an iBUG ``.pts`` file as 0-based pixel coordinates (68, 2).

    Accepts the ``version: 1 / n_points: 68 / { ... }`` layout and header-less files; the
    file's values are 1-based (MATLAB), so 1 is subtracted.
    """
    text = Path(path).read_text(errors="replace")
    body = text.split("{", 1)[1].split("}", 1)[0] if "{" in text else text
    try:
        values = np.array(body.split(), dtype=np.float64)
    except ValueError:
        raise DataError(f"{path}: not a .pts file (expected 68 lines of 'x y')") from None
    if values.size != 136:
        raise DataError(f"{path}: {values.size // 2} points, expected 68")
    return values.reshape(N_KEYPOINTS, 2) - 1.0


def crop_300w_face(image, pts, size=W300_SIZE, scale=W300_SCALE):
    """The ``300w_train`` crop of one face: a square ``scale`` x the landmarks' larger side,
    centred on their box, border pixels replicated where it leaves the image, resized to
    ``size`` with INTER_AREA. Returns the crop and the points in its pixels (0-based)."""
    pts = np.asarray(pts, dtype=np.float64)
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    side = int(round(scale * max(x1 - x0, y1 - y0)))
    left = int(round((x0 + x1) / 2 - side / 2))
    top = int(round((y0 + y1) / 2 - side / 2))
    window = cut_window(image, left, top, side, border="replicate")
    crop = cv2.resize(window, (size, size), interpolation=cv2.INTER_AREA)
    return crop, (pts - [left, top] + 0.5) * (size / side) - 0.5


def _split_source(source):
    name, sep, folder = str(source).partition("=")
    return (name, Path(folder)) if sep else (Path(source).name.lower(), Path(source))


def convert_300w(sources, dest=None, quiet=False) -> Path:
    """Convert 300-W as its publishers distribute it (image files with ``.pts`` files of the
    same name) into ``dest`` (default ``data/300w_train``): ``images/<prefix>_<name>.jpg``
    224-px crops and ``keypoints.csv`` in the course layout, which ``dataset_300w`` reads.

    ``sources``: folders such as ``lfpw/trainset``; ``prefix=folder`` names the prefix (by
    default the folder's name). Written to a temporary folder and renamed when complete.
    Keep test folders (``testset``, AFW, iBUG) out of a training set.
    """
    dest = Path(dest or DATA_DIR / W300_NAME)
    rows = []
    with atomic_folder(dest) as staging:
        (staging / "images").mkdir()
        for source in sources:
            prefix, folder = _split_source(source)
            pts_files = sorted(folder.glob("*.pts"))
            if not pts_files:
                raise DataError(f"{folder}: no .pts files (expected 300-W image + .pts pairs)")
            for pts_file in tqdm(pts_files, desc=prefix, disable=quiet or None):
                images = [pts_file.with_suffix(e) for e in (".jpg", ".png", ".jpeg", ".bmp")]
                image_file = next((f for f in images if f.is_file()), None)
                if image_file is None:
                    raise DataError(f"{pts_file}: no image of the same name beside it")
                crop, q = crop_300w_face(load_image(image_file), read_pts(pts_file))
                name = f"{prefix}_{pts_file.stem}.jpg"
                Image.fromarray(crop).save(staging / "images" / name, quality=88)
                rows.append([name, *np.round(q.reshape(-1), 2)])
        frame = pd.DataFrame(rows).set_index(0)
        frame.index.name = None
        frame.columns = range(2 * N_KEYPOINTS)
        frame.to_csv(staging / "keypoints.csv")
        (staging / COMPLETE_MARKER).write_text(f"{dest.name} (converted)\n")
    if not quiet:
        print(f"{len(rows)} faces converted into {dest}")
    return dest
