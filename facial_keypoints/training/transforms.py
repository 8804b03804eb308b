"""Transforms from a dataset sample to a model input, and training's augmentation.

* The course's steps on numpy images: ``Rescale``, ``RandomCrop``/``CenterCrop``, ``Normalize``
  (grayscale in [0, 1], keypoints centred and scaled), ``ToTensor``.
* Augmentation with ``torchvision.transforms.v2`` and ``tv_tensors.KeyPoints``, so that the
  keypoints follow the pixels: ``RandomHorizontalFlip`` (mirror table applied), ``RandomAffine``,
  ``ColorJitter``, ``Degrade`` (blur, noise, occlusion).
* Face crops: ``FaceCrop`` (the upright square of ``geometry.upright_square``) and
  ``crop_face`` (an axis-aligned square, the course's first crop rule).
* Whole pipelines: ``course_transform`` and ``face_transform``.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from facial_keypoints.geometry import CROP_SCALE, _turn, cut_window, upright_square, warp_face
from facial_keypoints.images import unit_image
from facial_keypoints.landmarks import FLIP_INDICES


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

    def __repr__(self):
        return f"Normalize(kp_mean={self.kp_mean:g}, kp_std={self.kp_std:g}, gray={self.gray})"

    def __call__(self, sample):
        image, key_pts = sample["image"], sample["keypoints"]
        key_pts = (np.asarray(key_pts, dtype=np.float32) - self.kp_mean) / self.kp_std
        return {**sample, "image": unit_image(image, self.gray), "keypoints": key_pts}


class Rescale:
    """Rescale the image to a given size.

    Args:
        output_size (tuple or int): an int matches the smaller edge to it, keeping the aspect
            ratio; a tuple (h, w) is the exact output size.
    """

    def __init__(self, output_size):
        assert isinstance(output_size, (int, tuple))
        self.output_size = output_size

    def __repr__(self):
        return f"Rescale({self.output_size})"

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

    def __repr__(self):
        return f"{type(self).__name__}({self.output_size})"

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

    def __repr__(self):
        return "ToTensor()"

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

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p:g})"

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

    def __repr__(self):
        t = self.transform
        return f"RandomAffine(degrees={t.degrees}, translate={t.translate}, scale={t.scale})"

    def __call__(self, sample):
        return _v2_apply(self.transform, sample)


class ColorJitter:
    """Random brightness, contrast, saturation and gamma; the keypoints do not move.

    ``gamma``: the gamma is drawn from [1 - gamma, 1 + gamma] (0: no gamma change)."""

    def __init__(self, brightness=0.3, contrast=0.3, saturation=0.0, gamma=0.0):
        self.transform = v2.ColorJitter(brightness=brightness, contrast=contrast,
                                        saturation=saturation)
        self.brightness, self.contrast, self.saturation, self.gamma = \
            brightness, contrast, saturation, gamma

    def __repr__(self):
        return (f"ColorJitter(brightness={self.brightness:g}, contrast={self.contrast:g}, "
                f"saturation={self.saturation:g}, gamma={self.gamma:g})")

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
        self.p = p
        self.steps = v2.Compose([
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=p),
            v2.RandomApply([v2.GaussianNoise(mean=0.0, sigma=0.05, clip=True)], p=p),
            v2.RandomErasing(p=p, scale=(0.02, 0.15), value="random"),
        ])

    def __repr__(self):
        return f"Degrade(p={self.p:g})"

    def __call__(self, sample):
        image = sample["image"]
        out = self.steps(tv_tensors.Image(image)).as_subclass(torch.Tensor)
        return {**sample, "image": out.clamp_(0.0, 1.0)}


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

    def __repr__(self):
        jitter = (f", jitter_scale={self.jitter_scale:g}, jitter_shift={self.jitter_shift:g}, "
                  f"jitter_angle={self.jitter_angle:g}") if (
            self.jitter_scale or self.jitter_shift or self.jitter_angle) else ""
        return f"FaceCrop({self.size}, scale={self.scale:g}{jitter})"

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
