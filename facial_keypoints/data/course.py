"""The course dataset (YouTube Faces frames, 68 keypoints each): its CSV files, a PyTorch
``Dataset`` of samples ``{"image", "keypoints", "name"}`` and the split of its people into
training and validation.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from facial_keypoints.images import ImageReadError, load_image
from facial_keypoints.landmarks import N_KEYPOINTS
from facial_keypoints.paths import DATA_DIR

#: What a complete dataset holds: (csv name, image folder, number of rows).
SPLITS = {"train": ("training_frames_keypoints.csv", "training", 3462),
          "test": ("test_frames_keypoints.csv", "test", 770)}


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------
class DataError(ValueError):
    """A keypoint CSV or data folder that cannot be used; the message says what to do."""


def read_keypoints_csv(csv_file) -> pd.DataFrame:
    """Read a keypoint CSV (file name, then x0, y0, ..., x67, y67) and check it."""
    csv_file = Path(csv_file)
    if not csv_file.exists():
        raise DataError(f"{csv_file}: no such keypoint file. Run `fkp-fetch-data` "
                        f"(in the course: `make data`) to fetch the dataset.")
    try:
        frame = pd.read_csv(csv_file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{csv_file}: not a readable CSV ({e})") from None
    if frame.shape[1] != 1 + 2 * N_KEYPOINTS:
        raise DataError(f"{csv_file}: expected {1 + 2 * N_KEYPOINTS} columns (file name and "
                        f"{2 * N_KEYPOINTS} coordinates), found {frame.shape[1]}")
    coords = frame.iloc[:, 1:].apply(pd.to_numeric, errors="coerce")
    bad = coords.isna().any(axis=1)
    if bad.any():
        rows = ", ".join(str(i + 2) for i in np.flatnonzero(bad.to_numpy())[:5])
        raise DataError(f"{csv_file}: {int(bad.sum())} row(s) have missing or non-numeric "
                        f"coordinates (line {rows}); fix or remove them")
    frame.iloc[:, 1:] = coords
    return frame


#: Keypoints a little outside the image are legitimate (a face cut by the border); a point more
#: than this fraction of the image's width (height) beyond its left or right (top or bottom)
#: edge is almost surely a corrupt row.
OUTSIDE_MARGIN = 0.5


def _far_outside(pts, width, height, margin=OUTSIDE_MARGIN) -> np.ndarray:
    """Which of the points (N, 2) lie far outside a ``width`` x ``height`` image."""
    x, y = np.asarray(pts, dtype=np.float64).reshape(-1, 2).T
    return ((x < -margin * width) | (x > (1 + margin) * width)
            | (y < -margin * height) | (y > (1 + margin) * height))


def person_of(filename: str) -> str:
    """The person a frame shows: ``'Luis_Fonsi_21.jpg'`` -> ``'Luis_Fonsi'``."""
    return re.sub(r"_\d+\.\w+$", "", Path(filename).name)


class FacialKeypointsDataset(Dataset):
    """Face images and their 68 keypoints, read from a CSV as in the course.

    Args:
        csv_file: the keypoint CSV.
        root_dir: the folder with the images.
        transform: a callable applied to each sample dict.
        keypoints: indices of the keypoints to keep (e.g. ``[30]`` for the nose tip alone);
            all 68 when ``None``.
        subset: keep a deterministic subset of this many rows (the first ones in a fixed
            shuffled order given by ``seed``), for fast runs; all rows when ``None``.
        names: keep only these file names (e.g. one side of a split by person).
    """

    def __init__(self, csv_file, root_dir, transform=None, keypoints=None, subset=None,
                 seed=0, names=None):
        frame = read_keypoints_csv(csv_file)
        if names is not None:
            frame = frame[frame.iloc[:, 0].isin(set(names))]
        if subset is not None and subset < len(frame):
            order = np.random.default_rng(seed).permutation(len(frame))[:subset]
            frame = frame.iloc[np.sort(order)]
        self.csv_file = Path(csv_file)
        self._csv_lines = frame.index.to_numpy() + 2  # line 1 is the header
        self.key_pts_frame = frame.reset_index(drop=True)
        self.root_dir = Path(root_dir)
        self.transform = transform
        self.keypoint_indices = None if keypoints is None else list(keypoints)

    def __len__(self):
        return len(self.key_pts_frame)

    @property
    def filenames(self):
        return self.key_pts_frame.iloc[:, 0].tolist()

    def keypoints(self, idx) -> np.ndarray:
        pts = self.key_pts_frame.iloc[idx, 1:].to_numpy(dtype=np.float32).reshape(-1, 2)
        return pts if self.keypoint_indices is None else pts[self.keypoint_indices]

    def __getitem__(self, idx):
        name = self.key_pts_frame.iloc[idx, 0]
        where = f"{self.csv_file}, line {self._csv_lines[idx]}"
        try:
            image = load_image(self.root_dir / name)
        except ImageReadError as e:
            raise ImageReadError(f"{e} (listed in {where}); `fkp-fetch-data --check` "
                                 f"lists every problem of the dataset") from None
        pts = self.key_pts_frame.iloc[idx, 1:].to_numpy(dtype=np.float32).reshape(-1, 2)
        far = _far_outside(pts, image.shape[1], image.shape[0])
        if far.any():
            i = int(np.flatnonzero(far)[0])
            raise DataError(f"{where} ({name}): {int(far.sum())} keypoint(s) lie far outside "
                            f"the {image.shape[1]}x{image.shape[0]} image, e.g. point {i} at "
                            f"({pts[i, 0]:g}, {pts[i, 1]:g}); the row is probably corrupt: fix "
                            f"or remove it")
        sample = {"image": image, "keypoints": self.keypoints(idx)}
        if self.transform:
            sample = self.transform(sample)
        return sample


def dataset(split="train", transform=None, data_dir=None, **kwargs):
    """The course dataset's ``'train'`` or ``'test'`` split from ``data_dir`` (default data/)."""
    csv_name, folder, _ = SPLITS[split]
    data_dir = Path(data_dir or DATA_DIR)
    return FacialKeypointsDataset(data_dir / csv_name, data_dir / folder, transform, **kwargs)


def split_by_person(filenames, val_fraction=0.1, seed=0):
    """Split file names into (train, val) so that no person is on both sides."""
    people = sorted({person_of(f) for f in filenames})
    rng = np.random.default_rng(seed)
    rng.shuffle(people)
    n_val = max(1, round(len(people) * val_fraction))
    val_people = set(people[:n_val])
    train = [f for f in filenames if person_of(f) not in val_people]
    val = [f for f in filenames if person_of(f) in val_people]
    return train, val


def person_split(train_config=None):
    """(training names, validation names) of the course training split, divided by person as
    the run that ``train_config`` describes did it (its ``val_fraction``, ``seed`` and
    ``data_dir``; a checkpoint stores it as ``train_config``). Everything that measures on "the
    validation people" calls this with the model's own config, never with other defaults."""
    cfg = train_config or {}
    full = dataset("train", data_dir=cfg.get("data_dir"))
    return split_by_person(full.filenames, cfg.get("val_fraction", 0.1), cfg.get("seed", 0))
