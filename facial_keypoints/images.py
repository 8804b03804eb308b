"""Reading and writing pictures: every image the project reads goes through ``load_image``.

Images are RGB ``uint8`` arrays (H, W, 3) in memory; ``load_image(path, alpha=True)`` keeps
transparency (RGBA) for overlay art.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageReadError(ValueError):
    """An image file that cannot be read; the message says which and why."""


class ImageTooLarge(ImageReadError):
    """An image over the number of pixels its reader accepts (``decode_image``'s
    ``max_pixels``)."""


def load_image(path, alpha=False) -> np.ndarray:
    """Read an image file by its content and return it as an RGB ``uint8`` array (H, W, 3),
    or RGBA (H, W, 4) with ``alpha`` (an image without transparency is then fully opaque).

    Accepts any format Pillow reads, whatever the extension says: RGB, RGBA (alpha dropped),
    grayscale, palette, CMYK and 16-bit images; EXIF-rotated JPEGs are turned upright. Anything
    else (no such file, a folder, a pipe or device, an empty, damaged or truncated file, an
    image over Pillow's 179-megapixel limit) raises ``ImageReadError`` naming the file and
    the reason.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image")
    if not path.is_file():   # reading a pipe or a device could wait for ever
        raise ImageReadError(f"{path}: not a regular file (a pipe, socket or device)")
    return _decode(path, path, alpha)


def decode_image(data: bytes, name="image", alpha=False, max_pixels=None) -> np.ndarray:
    """``load_image`` for an image's bytes (an upload, a file read from any file system):
    the same formats and rules; ``ImageReadError`` names it ``name``. ``max_pixels``: a
    picture with more is refused (``ImageTooLarge``) from its header, before it is decoded."""
    if not data:
        raise ImageReadError(f"{name}: empty, not an image")
    return _decode(io.BytesIO(data), name, alpha, max_pixels)


def _decode(source, name, alpha, max_pixels=None):
    """An image from a path or a binary file object, as ``load_image`` describes."""
    try:
        # Pillow warns about sizes between its two bomb limits (89 and 179 megapixels: a
        # 100-megapixel photo is fine) and about damaged metadata; the image is read either way.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(source) as im:
                if max_pixels and im.width * im.height > max_pixels:
                    raise ImageTooLarge(f"{name}: {im.width} x {im.height} px is over the "
                                        f"limit of {max_pixels / 1e6:g} megapixels: downscale "
                                        f"it first")
                im.load()
                try:
                    ImageOps.exif_transpose(im, in_place=True)  # no copy of a big image
                except Exception:  # a damaged EXIF block: keep the pixels as stored
                    pass
                return pil_to_rgb(im, alpha)
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as e:
        if max_pixels:   # over Pillow's own limit (179 megapixels): over the caller's too
            raise ImageTooLarge(f"{name}: image too large to read safely ({e}); downscale it "
                                f"first") from None
        raise ImageReadError(f"{name}: image too large to read safely ({e}); downscale it "
                             f"first") from None
    except UnidentifiedImageError:   # Pillow's message names its file object, not the image
        raise ImageReadError(f"{name}: not a readable image (cannot identify image file: no "
                             f"format Pillow reads)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{name}: not a readable image ({e})") from None
    except Exception as e:  # a damaged file can make a Pillow decoder fail in other ways
        raise ImageReadError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None


def pil_to_rgb(im: Image.Image, alpha=False) -> np.ndarray:
    """Convert a Pillow image of any mode to an RGB ``uint8`` array (RGBA with ``alpha``)."""
    if im.width < 1 or im.height < 1:
        raise ValueError("empty image")
    if alpha:
        rgb = pil_to_rgb(im)
        transparent = im.mode in ("RGBA", "LA", "PA") or \
            (im.mode == "P" and "transparency" in im.info)
        a = np.asarray(im.convert("RGBA"), dtype=np.uint8)[..., 3] if transparent else \
            np.full(rgb.shape[:2], 255, np.uint8)
        return np.ascontiguousarray(np.dstack([rgb, a]))
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


def as_rgb_array(image) -> np.ndarray:
    """A path or an array as an RGB uint8 array (H, W, 3)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"expected an RGB(A) or grayscale image array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.max() <= 1.0:
            arr = arr * 255.0
        elif arr.dtype == np.uint16:
            arr = arr / 257.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[:, :, :3])


def save_rgb(path, image):
    """Write an RGB uint8 array to an image file (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or \
            (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"expected a uint8 RGB, RGBA or grayscale image, got {image.dtype} "
                         f"{image.shape}")
    return image


def as3x3(m):
    """A 2x3 affine matrix as 3x3 (a last row 0, 0, 1), to compose transforms."""
    return np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])


def warp_affine(src, matrix, dsize, border=cv2.BORDER_CONSTANT, border_value=0):
    """``cv2.warpAffine`` that shrinks the source with area averaging first when the transform
    shrinks it a lot (bilinear warping alone would alias), cutting out the part it needs first.

    With a constant border, that part is cut as it lies, the outside filled with
    ``border_value``, so that shifting the source by whole pixels shifts the result exactly."""
    m = np.asarray(matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.7:
        w_out, h_out = dsize
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[-0.5, -0.5, 1], [w_out - 0.5, -0.5, 1], [-0.5, h_out - 0.5, 1],
                            [w_out - 0.5, h_out - 0.5, 1]]) @ inv.T
        margin = 2.0 / scale + 2
        x0, y0 = (int(np.floor(v - margin)) for v in corners[:, :2].min(axis=0))
        x1, y1 = (int(np.ceil(v + margin)) for v in corners[:, :2].max(axis=0))
        h, w = src.shape[:2]
        if border != cv2.BORDER_CONSTANT:  # other borders are made from the source itself
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if min(x1, w) <= max(x0, 0) or min(y1, h) <= max(y0, 0):
            shape = (h_out, w_out) + src.shape[2:]
            return np.full(shape, border_value, dtype=src.dtype)
        sub = np.full((y1 - y0, x1 - x0) + src.shape[2:], border_value, dtype=src.dtype)
        sub[max(y0, 0) - y0:min(y1, h) - y0, max(x0, 0) - x0:min(x1, w) - x0] = \
            src[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
        sw, sh = x1 - x0, y1 - y0
        nw, nh = max(1, round(sw * scale)), max(1, round(sh * scale))
        src = cv2.resize(sub, (nw, nh), interpolation=cv2.INTER_AREA)
        # resized pixel (xr, yr) is the source point ((xr + .5) * sw / nw - .5 + x0, ...)
        fx, fy = sw / nw, sh / nh
        back = np.array([[fx, 0, 0.5 * fx - 0.5 + x0], [0, fy, 0.5 * fy - 0.5 + y0], [0, 0, 1]])
        m = (as3x3(m) @ back)[:2]
    return cv2.warpAffine(src, m, dsize, flags=cv2.INTER_LINEAR, borderMode=border,
                          borderValue=border_value)


#: ITU-R BT.601 luma weights: how a colour image becomes the models' grayscale input.
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def unit_image(image, gray=True) -> np.ndarray:
    """An image as float32 in [0, 1], as the keypoint models take it: grayscale by
    ``GRAY_WEIGHTS`` (or RGB with ``gray=False``); uint8 is divided by 255, as is a float image
    with values above 1; a one-channel image stays as it is."""
    image = np.asarray(image)
    was_uint8 = image.dtype == np.uint8
    if image.ndim == 3 and not gray:
        image = image[..., :3]
    elif image.ndim == 3:
        image = image[..., :3].astype(np.float32) @ GRAY_WEIGHTS
    if was_uint8 or image.max() > 1.0:
        image = image.astype(np.float32) / 255.0
    return image.astype(np.float32)
