"""The course's data: the facial keypoints dataset and its transforms.

Every sample is a dict ``{'image': ..., 'keypoints': (68, 2) array}`` as in the course. The
course transforms (``Rescale``, ``RandomCrop``, ``Normalize``, ``ToTensor``) keep their names and
behaviour; the augmentation transforms use ``torchvision.transforms.v2`` with
``tv_tensors.KeyPoints`` so that the keypoints follow the pixels. Face crops (``crop_face``,
``FaceCrop``) cut the square around a face that the models are trained and run on.

The data itself is fetched by ``python fetch_data.py`` (``make data``) into ``data/``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from images import ImageReadError, load_image, warp_affine
from landmarks import FLIP_INDICES, LEFT_EYE_OUTER, N_KEYPOINTS, RIGHT_EYE_OUTER

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data"
IMAGES_DIR = ROOT / "images"
COURSE_IMAGES_DIR = IMAGES_DIR / "course"
#: ``FKP_FAST=1``: notebooks and scripts run on a small subset with tiny epochs (CI). It changes
#: sizes only, never the code path.
FAST = os.environ.get("FKP_FAST", "") not in ("", "0")

#: What a complete dataset holds: (csv name, image folder, number of rows).
SPLITS = {"train": ("training_frames_keypoints.csv", "training", 3462),
          "test": ("test_frames_keypoints.csv", "test", 770)}
#: The face crop's side as a multiple of the larger side of the keypoints' box: the rule the
#: models are trained with (each checkpoint stores its own).
CROP_SCALE = 1.3


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------
class DataError(ValueError):
    """A keypoint CSV or data folder that cannot be used; the message says what to do."""


def read_keypoints_csv(csv_file) -> pd.DataFrame:
    """Read a keypoint CSV (file name, then x0, y0, ..., x67, y67) and check it."""
    csv_file = Path(csv_file)
    if not csv_file.exists():
        raise DataError(f"{csv_file}: no such keypoint file. Run `python fetch_data.py` "
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
            raise ImageReadError(f"{e} (listed in {where}); `python fetch_data.py --check` "
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


# --------------------------------------------------------------------------------------------
# Course transforms (numpy images, as in the course notebooks)
# --------------------------------------------------------------------------------------------
class Normalize:
    """Convert a color image to grayscale in [0, 1] and scale keypoints to about [-1, 1].

    ``keypoints' = (keypoints - kp_mean) / kp_std``; the course's values (100, 50) fit 224-px
    inputs. Images that are already one-channel float are left as they are. With
    ``gray=False`` a colour image stays RGB (in [0, 1]).
    """

    def __init__(self, kp_mean=100.0, kp_std=50.0, gray=True):
        self.kp_mean, self.kp_std, self.gray = float(kp_mean), float(kp_std), gray

    def __call__(self, sample):
        image, key_pts = sample["image"], sample["keypoints"]
        image = np.asarray(image)
        was_uint8 = image.dtype == np.uint8
        if image.ndim == 3 and not self.gray:
            image = image[..., :3]
        elif image.ndim == 3:
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
        return {**sample, "image": _from_tv_image(img, image),
                "keypoints": key_pts.astype(np.float32)}


class RandomCrop:
    """Crop the image randomly to ``output_size`` (int for a square, or (h, w))."""

    def __init__(self, output_size):
        assert isinstance(output_size, (int, tuple))
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = output_size

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
    """Random brightness, contrast, saturation and gamma; the keypoints do not move.

    ``gamma``: the gamma is drawn from [1 - gamma, 1 + gamma] (0: no gamma change)."""

    def __init__(self, brightness=0.3, contrast=0.3, saturation=0.0, gamma=0.0):
        self.transform = v2.ColorJitter(brightness=brightness, contrast=contrast,
                                        saturation=saturation)
        self.gamma = gamma

    def __call__(self, sample):
        img = self.transform(_as_tv_image(sample["image"]))
        if self.gamma:
            img = TF.adjust_gamma(img, float(1 + self.gamma * (2 * torch.rand(()) - 1)))
        return {**sample, "image": _from_tv_image(img, sample["image"])}


class Degrade:
    """Photographic damage on a model-input tensor (1, H, W) in [0, 1]; keypoints do not move.

    Each with probability ``p``: a Gaussian blur (sigma 0.1-1.5 px, as from focus or motion),
    Gaussian noise (sigma up to 0.05), and an occluding patch (2-15 % of the area, random grey
    value, as a hand, a microphone or hair in front of the face). Trains for real photos, which
    are less clean than the dataset's video frames.
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


def cut_window(image, left, top, side, border="black"):
    """The square window ``[left, left+side) x [top, top+side)`` of ``image`` (integers), with
    the part outside the image filled with black or, with ``border="replicate"``, with the
    border pixels repeated (``cv2.BORDER_REPLICATE``)."""
    arr = np.asarray(image)
    h, w = arr.shape[:2]
    y0, y1, x0, x1 = max(top, 0), min(top + side, h), max(left, 0), min(left + side, w)
    if border == "replicate":
        pad = [y0 - top, top + side - y1, x0 - left, left + side - x1]
        window = arr[y0:y1, x0:x1]
        return cv2.copyMakeBorder(window, *pad, cv2.BORDER_REPLICATE) if any(pad) else window
    window = np.zeros((side, side) + arr.shape[2:], dtype=arr.dtype)
    if y0 < y1 and x0 < x1:
        window[y0 - top:y1 - top, x0 - left:x1 - left] = arr[y0:y1, x0:x1]
    return window


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
    out = TF.resize(_as_tv_image(cut_window(image, left, top, s)), [size, size], antialias=True)
    crop_img = _from_tv_image(out, image)
    if key_pts is None:
        return crop_img
    pts = _as_tv_keypoints(key_pts, np.asarray(image).shape[:2])
    pts = TF.resized_crop(pts, top, left, s, s, [size, size])
    return crop_img, pts.as_subclass(torch.Tensor).numpy().astype(np.float32)


def uncrop_keypoints(key_pts, crop, size):
    """Map keypoints from a ``size``-px crop made by ``crop_face(.., crop, ..)`` back to the
    image."""
    x, y, side = (float(v) for v in crop)
    top, left, s = int(round(y)), int(round(x)), max(1, int(round(side)))
    return np.asarray(key_pts, dtype=np.float64) * (s / size) + [left, top]


def eye_roll(keypoints) -> float:
    """The face's roll in degrees: the angle of the line from point 36 to point 45 (the outer
    eye corners), positive clockwise on screen (y points down): 0 for an upright face, 180 for
    one upside down."""
    pts = np.asarray(keypoints, dtype=np.float64)
    dx, dy = pts[LEFT_EYE_OUTER] - pts[RIGHT_EYE_OUTER]
    return float(np.degrees(np.arctan2(dy, dx)))


def _turn(angle):
    """The 2x2 matrix that turns image vectors by ``-angle`` degrees: a face rolled by
    ``angle`` comes out upright."""
    a = np.radians(angle)
    return np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])


def upright_square(keypoints, scale=CROP_SCALE, angle=None):
    """The square that shows a face upright, as ``(cx, cy, side, angle)``: turned by the face's
    roll (``eye_roll``, or ``angle``), centred on the keypoints' bounding box in the face's own
    frame, ``scale`` times that box's larger side. ``warp_face`` cuts it."""
    pts = np.asarray(keypoints, dtype=np.float64)
    angle = eye_roll(pts) if angle is None else float(angle)
    turn = _turn(angle)
    q = pts @ turn.T                                   # the keypoints in the face's frame
    lo, hi = q.min(axis=0), q.max(axis=0)
    cx, cy = turn.T @ ((lo + hi) / 2)
    return np.array([cx, cy, scale * float(np.max(hi - lo)), angle])


def crop_matrix(crop, size):
    """The 2x3 affine matrix from image pixels to the pixels of the ``size``-px crop of the
    square ``crop`` = (cx, cy, side, angle): the square's centre goes to the crop's centre and
    the face turns upright. Pixel-centre coordinates on both sides (pixel ``i`` is at ``i``)."""
    cx, cy, side, angle = (float(v) for v in crop)
    a = (size / side) * _turn(angle)
    return np.hstack([a, (np.array([size / 2 - 0.5, size / 2 - 0.5]) - a @ [cx, cy])[:, None]])


def warp_face(image, crop, size, key_pts=None):
    """Cut the (possibly turned) square ``crop`` = (cx, cy, side, angle) out of ``image`` as an
    upright ``size`` x ``size`` picture (area-averaged when shrinking, black outside the
    image). Returns it and, when given, the keypoints in its pixels; ``unwarp_keypoints`` maps
    predictions back."""
    m = crop_matrix(crop, size)
    out = warp_affine(np.asarray(image), m, (size, size))
    if key_pts is None:
        return out
    pts = np.asarray(key_pts, dtype=np.float64) @ m[:, :2].T + m[:, 2]
    return out, pts.astype(np.float32)


def unwarp_keypoints(key_pts, crop, size):
    """Map keypoints from a ``warp_face(.., crop, size)`` picture back to the image."""
    m = crop_matrix(crop, size)
    return (np.asarray(key_pts, dtype=np.float64) - m[:, 2]) @ np.linalg.inv(m[:, :2]).T


class FaceCrop:
    """Cut the square face crop around the keypoints, upright, and resize it to ``size`` px.

    The crop is turned by the face's roll and is ``scale`` times the larger side of the
    keypoints' box in the face's own frame (``upright_square``): the rule the pipeline applies
    to the keypoints it refines. ``jitter_scale``, ``jitter_shift`` and ``jitter_angle``
    randomise the crop's size (± fraction), centre (± fraction of the side) and angle
    (± degrees) to train for imprecise face boxes and roll estimates.
    """

    def __init__(self, size, scale=CROP_SCALE, jitter_scale=0.0, jitter_shift=0.0,
                 jitter_angle=0.0):
        self.size, self.scale = size, scale
        self.jitter_scale, self.jitter_shift, self.jitter_angle = \
            jitter_scale, jitter_shift, jitter_angle

    def __call__(self, sample):
        cx, cy, side, angle = upright_square(sample["keypoints"], self.scale)
        if self.jitter_scale or self.jitter_shift or self.jitter_angle:
            r = torch.rand(4).numpy() * 2 - 1
            shift = _turn(angle).T @ (self.jitter_shift * side * r[1:3])
            cx, cy = cx + shift[0], cy + shift[1]
            side *= 1 + self.jitter_scale * r[0]
            angle += self.jitter_angle * r[3]
        image, key_pts = warp_face(sample["image"], (cx, cy, side, angle), self.size,
                                   sample["keypoints"])
        return {**sample, "image": image, "keypoints": key_pts}


def course_transform(size=224, kp_mean=None, kp_std=None, train=True):
    """The course's pipeline: Rescale(250), RandomCrop(224), Normalize, ToTensor (scaled to
    ``size``); with ``train=False`` a centre crop instead of a random one."""
    kp_mean = size / 2 if kp_mean is None else kp_mean
    kp_std = size / 4 if kp_std is None else kp_std
    crop = RandomCrop(size) if train else CenterCrop(size)
    return v2.Compose([Rescale(round(size * 250 / 224)), crop, Normalize(kp_mean, kp_std),
                       ToTensor()])


def face_transform(size, crop_scale=CROP_SCALE, kp_mean=None, kp_std=None, augment=False,
                   degrees=25, jitter_scale=0.1, jitter_shift=0.06, flip=0.5, degrade=0.0,
                   color_jitter=0.4, gamma=0.0, color=False):
    """The transform from a dataset sample to a model input: upright face crop, grayscale,
    tensors.

    Keypoints are scaled by ``(kp - kp_mean) / kp_std`` (default: centre ``size/2``, spread
    ``size/4``). With ``augment``: mirror with probability ``flip`` (indices swapped), a crop
    jittered in size, centre and angle (up to ``degrees`` away from upright: as from an
    imprecise face detector and roll estimate), brightness/contrast
    changes (``color_jitter``, ``gamma``; saturation too with ``color``) and, with ``degrade`` >
    0, blur, noise and occlusion (``Degrade(p=degrade)``). ``color``: RGB input instead of
    grayscale.
    """
    kp_mean = size / 2 if kp_mean is None else kp_mean
    kp_std = size / 4 if kp_std is None else kp_std
    steps = []
    if augment and flip > 0:
        steps.append(RandomHorizontalFlip(flip))
    if augment:
        steps.append(FaceCrop(size, crop_scale, jitter_scale, jitter_shift, degrees))
    else:
        steps.append(FaceCrop(size, crop_scale))
    if augment:
        steps.append(ColorJitter(color_jitter, color_jitter, color_jitter if color else 0.0,
                                 gamma))
    steps += [Normalize(kp_mean, kp_std, gray=not color), ToTensor()]
    if augment and degrade > 0:
        steps.append(Degrade(degrade))
    return v2.Compose(steps)


