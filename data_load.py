"""Data for the facial keypoints project: set-up, dataset, transforms, the flip table.

Run it as a command to fetch everything the notebooks and tests need::

    python data_load.py            # dataset into data/, course photos into images/course/

Set ``FKP_DATA_MIRROR`` to a folder holding ``train-test-data.zip`` to copy it from there
instead of downloading it (``FKP_IMAGES_MIRROR`` likewise for the course photos; by default
``$FKP_DATA_MIRROR/../images`` is tried).

Every sample is a dict ``{'image': ..., 'keypoints': (68, 2) array}`` as in the course. The
course transforms (``Rescale``, ``RandomCrop``, ``Normalize``, ``ToTensor``) keep their names and
behaviour; the augmentation transforms use ``torchvision.transforms.v2`` with
``tv_tensors.KeyPoints`` so that the keypoints follow the pixels.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import sys
import tempfile
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data"
IMAGES_DIR = ROOT / "images"
COURSE_IMAGES_DIR = IMAGES_DIR / "course"

DATA_URL = ("https://s3.amazonaws.com/video.udacity-data.com/topher/2018/May/"
            "5aea1b91_train-test-data/train-test-data.zip")
DATA_ZIP = "train-test-data.zip"
IMAGES_URL = "https://raw.githubusercontent.com/udacity/P1_Facial_Keypoints/master/images/"
COURSE_IMAGES = ("obamas.jpg", "the_beatles.jpg", "mona_lisa.jpg", "sunglasses.png",
                 "moustache.png", "straw_hat.png", "landmarks_numbered.jpg")
MIRROR_ENV = "FKP_DATA_MIRROR"
IMAGES_MIRROR_ENV = "FKP_IMAGES_MIRROR"
#: ``FKP_FAST=1``: notebooks and scripts run on a small subset with tiny epochs (CI). It changes
#: sizes only, never the code path.
FAST = os.environ.get("FKP_FAST", "") not in ("", "0")

#: What a complete dataset holds: (csv name, image folder, number of rows).
SPLITS = {"train": ("training_frames_keypoints.csv", "training", 3462),
          "test": ("test_frames_keypoints.csv", "test", 770)}
N_KEYPOINTS = 68
COMPLETE_MARKER = ".complete"

# --------------------------------------------------------------------------------------------
# The 68 points (iBUG order) and the left/right mirror table
# --------------------------------------------------------------------------------------------
REGIONS = {
    "jaw": range(0, 17),
    "brows": range(17, 27),
    "nose": range(27, 36),
    "eyes": range(36, 48),
    "mouth": range(48, 68),
}
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 36, 45  # outer eye corners: the NME normaliser


def _mirror_pairs():
    pairs = [(i, 16 - i) for i in range(8)]                       # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]                 # brows
    pairs += [(31, 35), (32, 34)]                                 # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]   # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]                       # inner lips
    table = list(range(N_KEYPOINTS))
    for a, b in pairs:
        table[a], table[b] = b, a
    return tuple(table)


#: ``FLIP_INDICES[i]`` is the point that point ``i`` becomes in a mirrored face.
FLIP_INDICES = _mirror_pairs()


# --------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------
class ImageReadError(ValueError):
    """An image file that cannot be read; the message says which and why."""


def load_image(path) -> np.ndarray:
    """Read an image file by its content and return it as an RGB ``uint8`` array (H, W, 3).

    Accepts any format Pillow reads, whatever the extension says: RGB, RGBA (alpha dropped),
    grayscale, palette, CMYK and 16-bit images; EXIF-rotated JPEGs are turned upright. Anything
    else (no such file, a folder, an empty, damaged or truncated file, an image over Pillow's
    179-megapixel limit) raises ``ImageReadError`` naming the file and the reason.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image")
    try:
        # Pillow warns about sizes between its two bomb limits (89 and 179 megapixels: a
        # 100-megapixel photo is fine) and about damaged metadata; the image is read either way.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                try:
                    ImageOps.exif_transpose(im, in_place=True)  # no copy of a big image
                except Exception:  # a damaged EXIF block: keep the pixels as stored
                    pass
                return pil_to_rgb(im)
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: image too large to read safely ({e}); downscale it "
                             f"first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: not a readable image ({e})") from None
    except Exception as e:  # a damaged file can make a Pillow decoder fail in other ways
        raise ImageReadError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """Convert a Pillow image of any mode to an RGB ``uint8`` array."""
    if im.width < 1 or im.height < 1:
        raise ValueError("empty image")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if im.mode == "F" and arr.max() <= 1.0:
            hi = 1.0  # a floating-point image in [0, 1]
        gray = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA").convert("RGB")
    elif im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------
class DataError(ValueError):
    """A keypoint CSV or data folder that cannot be used; the message says what to do."""


def read_keypoints_csv(csv_file) -> pd.DataFrame:
    """Read a keypoint CSV (file name, then x0, y0, ..., x67, y67) and check it."""
    csv_file = Path(csv_file)
    if not csv_file.exists():
        raise DataError(f"{csv_file}: no such keypoint file. Run `python data_load.py` "
                        f"(or `make data`) to fetch the dataset.")
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
            raise ImageReadError(f"{e} (listed in {where}); `python data_load.py --check` "
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


# --------------------------------------------------------------------------------------------
# Course transforms (numpy images, as in the course notebooks)
# --------------------------------------------------------------------------------------------
class Normalize:
    """Convert a color image to grayscale in [0, 1] and scale keypoints to about [-1, 1].

    ``keypoints' = (keypoints - kp_mean) / kp_std``; the course's values (100, 50) fit 224-px
    inputs. Images that are already one-channel float are left as they are.
    """

    def __init__(self, kp_mean=100.0, kp_std=50.0):
        self.kp_mean, self.kp_std = float(kp_mean), float(kp_std)

    def __call__(self, sample):
        image, key_pts = sample["image"], sample["keypoints"]
        image = np.asarray(image)
        was_uint8 = image.dtype == np.uint8
        if image.ndim == 3:
            image = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114],
                                                                  dtype=np.float32)
        if was_uint8 or image.max() > 1.0:
            image = image.astype(np.float32) / 255.0
        key_pts = (np.asarray(key_pts, dtype=np.float32) - self.kp_mean) / self.kp_std
        return {**sample, "image": image.astype(np.float32), "keypoints": key_pts}


class Rescale:
    """Rescale the image to a given size.

    Args:
        output_size (tuple or int): an int matches the smaller edge to it, keeping the aspect
            ratio; a tuple (h, w) is the exact output size.
    """

    def __init__(self, output_size):
        assert isinstance(output_size, (int, tuple))
        self.output_size = output_size

    def __call__(self, sample):
        image, key_pts = sample["image"], sample["keypoints"]
        h, w = image.shape[:2]
        if isinstance(self.output_size, int):
            if h > w:
                new_h, new_w = self.output_size * h / w, self.output_size
            else:
                new_h, new_w = self.output_size, self.output_size * w / h
        else:
            new_h, new_w = self.output_size
        new_h, new_w = int(new_h), int(new_w)
        img = _as_tv_image(image)
        img = TF.resize(img, [new_h, new_w], antialias=True)
        key_pts = np.asarray(key_pts, dtype=np.float32) * [new_w / w, new_h / h]
        return {**sample, "image": _from_tv_image(img, image), "keypoints": key_pts.astype(np.float32)}


class RandomCrop:
    """Crop the image randomly to ``output_size`` (int for a square, or (h, w))."""

    def __init__(self, output_size):
        assert isinstance(output_size, (int, tuple))
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else output_size

    def _corner(self, h, w, new_h, new_w):
        top = int(torch.randint(0, h - new_h + 1, ()).item())
        left = int(torch.randint(0, w - new_w + 1, ()).item())
        return top, left

    def __call__(self, sample):
        image, key_pts = sample["image"], sample["keypoints"]
        h, w = image.shape[:2]
        new_h, new_w = self.output_size
        if h < new_h or w < new_w:
            raise ValueError(f"{type(self).__name__}({self.output_size}) needs an image at least "
                             f"that big, got {h}x{w}: put a Rescale before it")
        top, left = self._corner(h, w, new_h, new_w)
        image = image[top:top + new_h, left:left + new_w]
        key_pts = np.asarray(key_pts, dtype=np.float32) - [left, top]
        return {**sample, "image": image, "keypoints": key_pts.astype(np.float32)}


class CenterCrop(RandomCrop):
    """Crop the centre of the image to ``output_size`` (int for a square): RandomCrop's
    deterministic twin, for validation and test."""

    def _corner(self, h, w, new_h, new_w):
        return (h - new_h) // 2, (w - new_w) // 2


class ToTensor:
    """Convert the numpy image (H, W) or (H, W, C) and keypoints in a sample to tensors."""

    def __call__(self, sample):
        image, key_pts = sample["image"], sample["keypoints"]
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[:, :, None]
        image = torch.from_numpy(np.ascontiguousarray(image.transpose((2, 0, 1))))
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
        return {**sample, "image": image.float(),
                "keypoints": torch.from_numpy(np.asarray(key_pts, dtype=np.float32))}


# --------------------------------------------------------------------------------------------
# Augmentation and face crops (torchvision.transforms.v2 with KeyPoints)
# --------------------------------------------------------------------------------------------
def _as_tv_image(image):
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))))


def _from_tv_image(img, like):
    arr = img.numpy().transpose(1, 2, 0)
    if np.asarray(like).ndim == 2:
        arr = arr[:, :, 0]
    return np.ascontiguousarray(arr)


def _as_tv_keypoints(key_pts, canvas_hw):
    return tv_tensors.KeyPoints(torch.as_tensor(np.asarray(key_pts, dtype=np.float32)),
                                canvas_size=tuple(canvas_hw))


def _v2_apply(transform, sample):
    """Apply a v2 transform jointly to a numpy sample's image and keypoints."""
    image = sample["image"]
    img = _as_tv_image(image)
    pts = _as_tv_keypoints(sample["keypoints"], img.shape[-2:])
    img, pts = transform(img, pts)
    return {**sample, "image": _from_tv_image(img, image),
            "keypoints": pts.as_subclass(torch.Tensor).numpy().astype(np.float32)}


class RandomHorizontalFlip:
    """Mirror the face with probability ``p``; left and right keypoints swap their indices.

    Needs all 68 keypoints (the mirror table maps the 68-point order onto itself).
    """

    def __init__(self, p=0.5, flip_indices=FLIP_INDICES):
        self.p = p
        self.flip_indices = list(flip_indices)

    def __call__(self, sample):
        if torch.rand(()) >= self.p:
            return sample
        if len(sample["keypoints"]) != len(self.flip_indices):
            raise ValueError("RandomHorizontalFlip needs all 68 keypoints")
        out = _v2_apply(v2.RandomHorizontalFlip(p=1.0), sample)
        out["keypoints"] = out["keypoints"][self.flip_indices]
        return out


class RandomAffine:
    """Random rotation (degrees), scale and shift (fraction of the size), about the centre."""

    def __init__(self, degrees=15, translate=(0.05, 0.05), scale=(0.9, 1.1)):
        self.transform = v2.RandomAffine(degrees=degrees, translate=translate, scale=scale)

    def __call__(self, sample):
        return _v2_apply(self.transform, sample)


class ColorJitter:
    """Random brightness and contrast; the keypoints do not move."""

    def __init__(self, brightness=0.3, contrast=0.3):
        self.transform = v2.ColorJitter(brightness=brightness, contrast=contrast)

    def __call__(self, sample):
        img = self.transform(_as_tv_image(sample["image"]))
        return {**sample, "image": _from_tv_image(img, sample["image"])}


class Degrade:
    """Photographic damage on a model-input tensor (1, H, W) in [0, 1]; keypoints do not move.

    Each with probability ``p``: a Gaussian blur (sigma 0.1-1.5 px, as from focus or motion), Gaussian
    noise (sigma up to 0.05), and an occluding patch (2-15 % of the area, random grey value, as
    a hand, a microphone or hair in front of the face). Trains for real photos, which are less
    clean than the dataset's video frames.
    """

    def __init__(self, p=0.3):
        self.steps = v2.Compose([
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=p),
            v2.RandomApply([v2.GaussianNoise(mean=0.0, sigma=0.05, clip=True)], p=p),
            v2.RandomErasing(p=p, scale=(0.02, 0.15), value="random"),
        ])

    def __call__(self, sample):
        image = sample["image"]
        out = self.steps(tv_tensors.Image(image)).as_subclass(torch.Tensor)
        return {**sample, "image": out.clamp_(0.0, 1.0)}


def keypoint_box(key_pts):
    """The keypoints' bounding box as (x, y, w, h)."""
    pts = np.asarray(key_pts, dtype=np.float64)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return np.array([x0, y0, x1 - x0, y1 - y0])


def square_crop_box(box, scale=1.0):
    """A square (x, y, side) centred on box (x, y, w, h), ``scale`` times its larger side."""
    x, y, w, h = box
    side = max(w, h) * scale
    return np.array([x + w / 2 - side / 2, y + h / 2 - side / 2, side])


def crop_face(image, crop, size, key_pts=None):
    """Cut the square ``crop`` (x, y, side) out of ``image`` and resize it to ``size`` pixels.

    Parts of the crop outside the image are filled with black. Returns the crop and, when given,
    the keypoints in the crop's pixel coordinates. Map predictions back with
    ``uncrop_keypoints``.
    """
    x, y, side = (float(v) for v in crop)
    top, left, s = int(round(y)), int(round(x)), max(1, int(round(side)))
    # torchvision's resized_crop (crop, black outside the image, then resize), cutting the
    # window out of the numpy image first so that only the window is converted
    arr = np.asarray(image)
    h, w = arr.shape[:2]
    window = np.zeros((s, s) + arr.shape[2:], dtype=arr.dtype)
    y0, y1, x0, x1 = max(top, 0), min(top + s, h), max(left, 0), min(left + s, w)
    if y0 < y1 and x0 < x1:
        window[y0 - top:y1 - top, x0 - left:x1 - left] = arr[y0:y1, x0:x1]
    out = TF.resize(_as_tv_image(window), [size, size], antialias=True)
    crop_img = _from_tv_image(out, image)
    if key_pts is None:
        return crop_img
    pts = _as_tv_keypoints(key_pts, (h, w))
    pts = TF.resized_crop(pts, top, left, s, s, [size, size])
    return crop_img, pts.as_subclass(torch.Tensor).numpy().astype(np.float32)


def uncrop_keypoints(key_pts, crop, size):
    """Map keypoints from a ``size``-px crop made by ``crop_face(.., crop, ..)`` back to the image."""
    x, y, side = (float(v) for v in crop)
    top, left, s = int(round(y)), int(round(x)), max(1, int(round(side)))
    return np.asarray(key_pts, dtype=np.float64) * (s / size) + [left, top]


class FaceCrop:
    """Cut a square face crop around the keypoints and resize it to ``size`` pixels.

    The crop is centred on the keypoints' bounding box and ``scale`` times its larger side,
    the same rule the detector applies to a face box (see ``detect.py``). ``jitter_scale`` and
    ``jitter_shift`` randomise the crop's size (± fraction) and centre (± fraction of the side)
    to train for imprecise face boxes.
    """

    def __init__(self, size, scale=1.3, jitter_scale=0.0, jitter_shift=0.0):
        self.size, self.scale = size, scale
        self.jitter_scale, self.jitter_shift = jitter_scale, jitter_shift

    def __call__(self, sample):
        x, y, side = square_crop_box(keypoint_box(sample["keypoints"]), self.scale)
        if self.jitter_scale or self.jitter_shift:
            r = torch.rand(3).numpy() * 2 - 1
            new_side = side * (1 + self.jitter_scale * r[0])
            x += (side - new_side) / 2 + self.jitter_shift * side * r[1]
            y += (side - new_side) / 2 + self.jitter_shift * side * r[2]
            side = new_side
        image, key_pts = crop_face(sample["image"], (x, y, side), self.size, sample["keypoints"])
        return {**sample, "image": image, "keypoints": key_pts}


def course_transform(size=224, kp_mean=None, kp_std=None, train=True):
    """The course's pipeline: Rescale(250), RandomCrop(224), Normalize, ToTensor (scaled to
    ``size``); with ``train=False`` a centre crop instead of a random one."""
    kp_mean = size / 2 if kp_mean is None else kp_mean
    kp_std = size / 4 if kp_std is None else kp_std
    crop = RandomCrop(size) if train else CenterCrop(size)
    return v2.Compose([Rescale(round(size * 250 / 224)), crop, Normalize(kp_mean, kp_std),
                       ToTensor()])


def face_transform(size, crop_scale=1.3, kp_mean=None, kp_std=None, augment=False,
                   degrees=25, jitter_scale=0.1, jitter_shift=0.06, flip=0.5, degrade=0.0):
    """The transform from a dataset sample to a model input: face crop, grayscale, tensors.

    Keypoints are scaled by ``(kp - kp_mean) / kp_std`` (default: centre ``size/2``, spread
    ``size/4``). With ``augment``: mirror with probability ``flip`` (indices swapped), rotation
    up to ``degrees``, a jittered crop (as from an imprecise face detector), brightness/contrast
    changes and, with ``degrade`` > 0, blur, noise and occlusion (``Degrade(p=degrade)``).
    """
    kp_mean = size / 2 if kp_mean is None else kp_mean
    kp_std = size / 4 if kp_std is None else kp_std
    steps = []
    if augment:
        if flip > 0:
            steps.append(RandomHorizontalFlip(flip))
        steps.append(RandomAffine(degrees=degrees, translate=(0, 0), scale=(1, 1)))
    steps.append(FaceCrop(size, crop_scale, jitter_scale if augment else 0.0,
                          jitter_shift if augment else 0.0))
    if augment:
        steps.append(ColorJitter(0.4, 0.4))
    steps += [Normalize(kp_mean, kp_std), ToTensor()]
    if augment and degrade > 0:
        steps.append(Degrade(degrade))
    return v2.Compose(steps)


# --------------------------------------------------------------------------------------------
# Data set-up: download (or copy from a mirror), check, extract atomically
# --------------------------------------------------------------------------------------------
def _mirror_dir(env, fallback=None):
    value = os.environ.get(env)
    if value:
        path = Path(value).expanduser()
        if not path.is_dir():
            raise DataError(f"${env} is set to {value!r}, which is not a folder. Point it at the "
                            f"folder that holds the mirrored files, or unset it to download.")
        return path
    return fallback


def _download(url, dest: Path, desc):
    """Download ``url`` to ``dest`` through a ``.part`` file, renamed only when complete."""
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(part, dest)
    except BaseException as e:
        part.unlink(missing_ok=True)
        if isinstance(e, (OSError, http.client.HTTPException)):  # incl. a cut connection
            raise DataError(f"could not download {url} ({e}). With no internet, set "
                            f"${MIRROR_ENV} to a folder holding {DATA_ZIP}.") from None
        raise


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
            _download(DATA_URL, zip_path, DATA_ZIP)
        staging = tmp / "staging"
        try:
            with zipfile.ZipFile(zip_path) as z:
                members = [m for m in z.infolist() if not m.filename.startswith("__MACOSX")]
                for m in tqdm(members, desc="extracting", unit="file", disable=quiet):
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
    (data_dir / COMPLETE_MARKER).write_text(f"{DATA_ZIP}\n")
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
            tmp = target.with_name(target.name + ".part")
            try:
                shutil.copyfile(mirror / name, tmp)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        else:
            _download(IMAGES_URL + name, target, name)
        load_image(target)  # a clear error now rather than later if it is not an image
    if not quiet:
        print(f"course images ready in {dest}")
    return dest


W300_DIR = DATA_DIR / "300w_train"
W300_NAME = "300w_train"


def fetch_300w(data_dir=None, quiet=False):
    """Copy the 300-W training crops (``300w_train/``: images/ + keypoints.csv) from the mirror.

    300-W has no public download URL that fits this layout (its publishers distribute it under
    their own terms), so it comes only from ``$FKP_DATA_MIRROR/300w_train`` — see its README for
    provenance and terms: never commit or redistribute it. Returns the folder, or ``None`` when
    no mirror holds it. Copied through a temporary folder, renamed when complete.
    """
    dest = Path(data_dir or DATA_DIR) / W300_NAME
    if (dest / COMPLETE_MARKER).is_file():
        return dest
    mirror = _mirror_dir(MIRROR_ENV)
    source = mirror / W300_NAME if mirror is not None else None
    if source is None or not (source / "keypoints.csv").is_file():
        if not quiet:
            print(f"300-W crops not available (no ${MIRROR_ENV}/{W300_NAME}); skipped")
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-300w-", dir=dest.parent) as tmp:
        staging = Path(tmp) / W300_NAME
        shutil.copytree(source, staging)
        frame = read_keypoints_csv(staging / "keypoints.csv")
        missing = [n for n in frame.iloc[:, 0] if not (staging / "images" / n).is_file()]
        if missing:
            raise DataError(f"{source}: {len(missing)} image(s) listed in keypoints.csv are "
                            f"missing, e.g. {missing[0]}")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    (dest / COMPLETE_MARKER).write_text("300w_train\n")
    if not quiet:
        print(f"300-W crops ready in {dest}")
    return dest


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


def split_300w_files(data_dir=None):
    """``split_300w`` of the crops in ``data/300w_train`` (its README's duplicate groups kept
    together): (training names, held-out names)."""
    folder = Path(data_dir or DATA_DIR) / W300_NAME
    return split_300w(dataset_300w(data_dir=data_dir).filenames, readme=folder / "README.md")


def dataset_300w(transform=None, data_dir=None, **kwargs):
    """The 300-W training crops through the same dataset class (same CSV layout)."""
    folder = Path(data_dir or DATA_DIR) / W300_NAME
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
    return values.reshape(68, 2) - 1.0


def crop_300w_face(image, pts, size=W300_SIZE, scale=W300_SCALE):
    """The ``300w_train`` crop of one face: a square ``scale`` x the landmarks' larger side,
    centred on their box, border pixels replicated where it leaves the image, resized to
    ``size`` with INTER_AREA. Returns the crop and the points in its pixels (0-based)."""
    import cv2

    pts = np.asarray(pts, dtype=np.float64)
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    side = int(round(scale * max(x1 - x0, y1 - y0)))
    left = int(round((x0 + x1) / 2 - side / 2))
    top = int(round((y0 + y1) / 2 - side / 2))
    h, w = image.shape[:2]
    pad = [max(0, -top), max(0, top + side - h), max(0, -left), max(0, left + side - w)]
    window = image[max(0, top):min(h, top + side), max(0, left):min(w, left + side)]
    if any(pad):
        window = cv2.copyMakeBorder(window, *pad, cv2.BORDER_REPLICATE)
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
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".convert-300w-", dir=dest.parent) as tmp:
        staging = Path(tmp) / dest.name
        (staging / "images").mkdir(parents=True)
        for source in sources:
            prefix, folder = _split_source(source)
            pts_files = sorted(folder.glob("*.pts"))
            if not pts_files:
                raise DataError(f"{folder}: no .pts files (expected 300-W image + .pts pairs)")
            for pts_file in tqdm(pts_files, desc=prefix, disable=quiet):
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
        frame.columns = range(136)
        frame.to_csv(staging / "keypoints.csv")
        (staging / COMPLETE_MARKER).write_text("300w_train (converted)\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    if not quiet:
        print(f"{len(rows)} faces converted into {dest}")
    return dest


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fetch the dataset into data/ and the course "
                                     "photos into images/course/.")
    parser.add_argument("--data-dir", default=str(DATA_DIR))
    parser.add_argument("--images-dir", default=str(COURSE_IMAGES_DIR))
    parser.add_argument("--check", action="store_true", help="only check data/, fetch nothing")
    parser.add_argument("--convert-300w", nargs="+", metavar="[PREFIX=]FOLDER",
                        help="convert 300-W folders of images + .pts files (from its "
                             "publishers) into data/300w_train, then exit")
    args = parser.parse_args(argv)
    try:
        if args.convert_300w:
            convert_300w(args.convert_300w, Path(args.data_dir) / W300_NAME)
            return 0
        if args.check:
            problems = check_dataset(args.data_dir)
            print("\n".join(problems) or "dataset complete")
            return 1 if problems else 0
        fetch_dataset(args.data_dir)
        fetch_course_images(args.images_dir)
        fetch_300w(args.data_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
