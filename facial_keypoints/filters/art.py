"""The art of the face filters: the project's own drawings (sunglasses, moustache, hat, drawn
with OpenCV shapes), the course's PNGs on request, and trimming to the visible pixels.

Art is an RGBA ``uint8`` array; ``overlays.py`` places it on faces.
"""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from facial_keypoints.images import load_image
from facial_keypoints.paths import COURSE_IMAGES_DIR

#: The kinds of art.
ART_KINDS = ("sunglasses", "moustache", "hat")
#: The course's PNG for each kind of art (in ``paths.COURSE_IMAGES_DIR``).
COURSE_ART = {"sunglasses": "sunglasses.png", "moustache": "moustache.png",
              "hat": "straw_hat.png"}


def trim_art(art, threshold=8) -> np.ndarray:
    """The RGBA art cut to the bounding box of its visible pixels (alpha > ``threshold``), so
    that sizes and pivots refer to what one sees, not to transparent margins."""
    art = check_art(art)
    ys, xs = np.nonzero(art[:, :, 3] > threshold)
    if len(xs) == 0:
        return art
    return art[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def check_art(art) -> np.ndarray:
    art = np.asarray(art)
    if art.ndim != 3 or art.shape[2] != 4 or art.dtype != np.uint8:
        raise ValueError(f"art must be an RGBA uint8 array (H, W, 4), got {art.dtype} "
                         f"{art.shape}")
    return art


_SUPERSAMPLE = 3


class _Painter:
    """Paint opaque or translucent shapes, one over the other, on a transparent canvas.

    Shapes are drawn with OpenCV into a mask at ``_SUPERSAMPLE`` times the size and composited
    "over" what is there (premultiplied colour); ``finish`` shrinks the canvas with area
    averaging, which smooths the edges, and returns RGBA uint8.
    """

    def __init__(self, width, height):
        self.W, self.H, self.k = int(width), int(height), _SUPERSAMPLE
        self.canvas = np.zeros((self.H * self.k, self.W * self.k, 4), np.float32)

    def pts(self, points):
        """Points on the output canvas (x in [0, W], y in [0, H]) -> supersampled pixels."""
        return np.round(np.asarray(points, dtype=np.float64) * self.k - 0.5) \
            .astype(np.int32)

    def pt(self, x, y):
        return tuple(int(v) for v in self.pts([x, y]))

    def size(self, a, b):
        return int(round(a * self.k)), int(round(b * self.k))

    def paint(self, draw, rgb, alpha=1.0):
        """``draw(mask)`` draws a shape with value 255 into a blank mask; the shape is painted
        in colour ``rgb`` with opacity ``alpha`` over the canvas."""
        mask = np.zeros(self.canvas.shape[:2], np.uint8)
        draw(mask)
        x, y, w, h = cv2.boundingRect(mask)          # only where the shape is
        if w == 0 or h == 0:
            return
        a = (mask[y:y + h, x:x + w].astype(np.float32) * np.float32(alpha / 255.0))[:, :, None]
        part = self.canvas[y:y + h, x:x + w]
        part[:, :, :3] = np.float32(rgb) * a + part[:, :, :3] * (1 - a)
        part[:, :, 3:] = a + part[:, :, 3:] * (1 - a)

    def polygon(self, points, rgb, alpha=1.0):
        self.paint(lambda m: cv2.fillPoly(m, [self.pts(points)], 255, cv2.LINE_8), rgb, alpha)

    def ellipse(self, centre, axes, rgb, alpha=1.0, angle=0.0, start=0, end=360, thickness=-1):
        t = thickness if thickness < 0 else max(1, int(round(thickness * self.k)))
        self.paint(lambda m: cv2.ellipse(m, self.pt(*centre), self.size(*axes), angle, start,
                                         end, 255, t, cv2.LINE_8), rgb, alpha)

    def finish(self) -> np.ndarray:
        pm = cv2.resize(self.canvas, (self.W, self.H), interpolation=cv2.INTER_AREA)
        a = pm[:, :, 3:4]
        rgb = np.where(a > 1e-6, pm[:, :, :3] / np.maximum(a, 1e-6), 0.0)
        out = np.concatenate([rgb, a * 255.0], axis=2)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _lens_outline(cx, cy, a, b, n=2.6, taper=0.18, samples=120):
    """A rounded lens: a superellipse (exponent ``n``) whose lower half narrows by ``taper``."""
    t = np.linspace(0, 2 * np.pi, samples, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = a * np.sign(c) * np.abs(c) ** (2 / n)
    y = b * np.sign(s) * np.abs(s) ** (2 / n)
    x = x * (1 - taper * np.clip(y / b, 0, 1))
    return np.stack([cx + x, cy + y], axis=1)


def make_sunglasses(width=480) -> np.ndarray:
    """Sunglasses: two dark lenses in a black frame with a bridge and a slight shine (RGBA)."""
    W = int(width)
    H = int(round(W * 0.38))
    p = _Painter(W, H)
    frame, lens, lens_low = (18, 18, 22), (40, 46, 62), (22, 26, 36)
    for side in (-1, 1):
        cx, cy = W / 2 + side * 0.245 * W, 0.47 * H
        a, b = 0.215 * W, 0.40 * H
        p.polygon(_lens_outline(cx, cy, a, b), frame)
        p.polygon(_lens_outline(cx, cy + 0.01 * H, a - 0.03 * W, b - 0.08 * H), lens, 0.92)
        p.polygon(_lens_outline(cx, cy + 0.16 * H, a - 0.045 * W, b - 0.24 * H), lens_low, 0.6)
        # the shine: a pale streak across the upper outer part of the lens
        p.ellipse((cx - side * 0.09 * W, cy - 0.17 * H), (0.06 * W, 0.035 * H), (235, 240, 255),
                  0.45, angle=-side * 25)
        # hinge towards the temples
        hx = W / 2 + side * 0.465 * W
        p.polygon([[hx - 0.03 * W, 0.14 * H], [hx + 0.03 * W, 0.14 * H],
                   [hx + 0.03 * W, 0.28 * H], [hx - 0.03 * W, 0.28 * H]], frame)
    # the bridge: an arc between the lenses, and a bar across the top
    p.ellipse((W / 2, 0.36 * H), (0.07 * W, 0.12 * H), frame, start=190, end=350,
              thickness=0.05 * H)
    p.polygon([[0.22 * W, 0.08 * H], [0.78 * W, 0.08 * H], [0.78 * W, 0.17 * H],
               [0.22 * W, 0.17 * H]], frame)
    return p.finish()


def _catmull_rom(points, samples=24):
    """A smooth curve through ``points`` (N, 2): a uniform Catmull-Rom spline."""
    q = np.asarray(points, dtype=np.float64)
    q = np.vstack([2 * q[0] - q[1], q, 2 * q[-1] - q[-2]])
    out = []
    t = np.linspace(0, 1, samples, endpoint=False)[:, None]
    for i in range(1, len(q) - 2):
        p0, p1, p2, p3 = q[i - 1], q[i], q[i + 1], q[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(q[-2][None])
    return np.vstack(out)


def make_moustache(width=480) -> np.ndarray:
    """A curly handlebar moustache in dark brown, with a few lighter hair strokes (RGBA)."""
    W = int(width)
    H = int(round(W * 0.34))
    p = _Painter(W, H)
    # the right half's centre line (x from the middle, y down), as fractions of the width
    dx = [0.00, 0.05, 0.12, 0.21, 0.30, 0.375, 0.43, 0.46, 0.465, 0.45, 0.425, 0.415]
    dy = [0.10, 0.095, 0.12, 0.175, 0.20, 0.19, 0.155, 0.11, 0.07, 0.05, 0.06, 0.085]
    line = _catmull_rom(np.stack([dx, dy], axis=1), samples=30)
    t = np.linspace(0, 1, len(line))
    radius = 0.072 * (1 - t) ** 1.1 + 0.007          # thick under the nose, thin in the curl

    def body(mask):
        for side in (-1, 1):
            for (x, y), r in zip(line, radius):
                cv2.circle(mask, p.pt(W / 2 + side * x * W, y * W), int(round(r * W * p.k)),
                           255, -1, cv2.LINE_8)

    p.paint(body, (48, 30, 22))
    seg = line[: int(len(line) * 0.62)]

    def strokes(mask):                                 # hair strokes along the body
        for side in (-1, 1):
            for off in (-0.35, 0.0, 0.35):
                pts = np.stack([W / 2 + side * seg[:, 0] * W,
                                (seg[:, 1] + off * radius[: len(seg)] * 0.9) * W], 1)
                cv2.polylines(mask, [p.pts(pts)], False, 255, max(1, int(0.006 * W * p.k)),
                              cv2.LINE_8)

    p.paint(strokes, (110, 76, 56), 0.8)
    return p.finish()


def make_hat(width=480) -> np.ndarray:
    """A black top hat with a red band and a wide brim (RGBA). The head enters it (the line
    where the crown meets the brim) at ``ART_PIVOT['hat']`` of its height."""
    W = int(width)
    H = int(round(W * 0.78))
    p = _Painter(W, H)
    felt, felt_top, rim, band = (28, 28, 34), (70, 72, 84), (12, 12, 16), (170, 30, 40)
    brim_y, crown_top = 0.82 * H, 0.07 * H
    half_bottom, half_top = 0.30 * W, 0.33 * W        # the crown flares a little upwards
    # brim: a flat ellipse with a darker underside
    p.ellipse((W / 2, brim_y + 0.02 * H), (0.495 * W, 0.155 * H), rim)
    p.ellipse((W / 2, brim_y), (0.48 * W, 0.13 * H), felt)
    # crown: a flared trapezoid with a rounded bottom edge
    p.polygon([[W / 2 - half_bottom, brim_y], [W / 2 - half_top, crown_top],
               [W / 2 + half_top, crown_top], [W / 2 + half_bottom, brim_y]], felt)
    p.ellipse((W / 2, brim_y), (half_bottom, 0.05 * H), felt, start=0, end=180)
    # the band just above the brim
    band_top, band_bottom = brim_y - 0.17 * H, brim_y - 0.03 * H
    hb, ht = half_bottom + 0.004 * W, half_bottom + 0.008 * W

    def band_shape(mask):
        cv2.fillPoly(mask, [p.pts([[W / 2 - hb, band_bottom], [W / 2 - ht, band_top],
                                   [W / 2 + ht, band_top], [W / 2 + hb, band_bottom]])],
                     255, cv2.LINE_8)
        cv2.ellipse(mask, p.pt(W / 2, band_bottom), p.size(hb, 0.05 * H), 0, 0, 180, 255, -1)

    p.paint(band_shape, band)
    p.ellipse((W / 2, band_top), (ht, 0.05 * H), felt, start=0, end=180)  # curved top edge
    # the top of the crown (seen slightly from above) and a soft highlight down the left side
    p.ellipse((W / 2, crown_top), (half_top, 0.055 * H), felt_top)
    p.polygon([[W / 2 - half_top + 0.06 * W, crown_top + 0.06 * H],
               [W / 2 - half_top + 0.10 * W, crown_top + 0.06 * H],
               [W / 2 - half_bottom + 0.09 * W, band_top - 0.01 * H],
               [W / 2 - half_bottom + 0.06 * W, band_top - 0.01 * H]], (90, 92, 106), 0.6)
    return p.finish()


_MAKERS = {"sunglasses": make_sunglasses, "moustache": make_moustache, "hat": make_hat}


@functools.lru_cache(maxsize=None)
def _own_art_cached(kind):
    art = _MAKERS[kind]()
    art.flags.writeable = False
    return art


def own_art(kind) -> np.ndarray:
    """The project's own art for ``kind`` (a fresh RGBA uint8 array; drawn once, cached)."""
    if kind not in _MAKERS:
        raise ValueError(f"unknown kind of art {kind!r}; expected one of {ART_KINDS}")
    return _own_art_cached(kind).copy()


def load_art(kind, prefer_course=False, folder=None) -> np.ndarray:
    """The RGBA art for ``kind``: the course's PNG (``COURSE_ART``, from ``folder``, default
    ``paths.COURSE_IMAGES_DIR``) when ``prefer_course`` and the file is there, else the
    project's own drawing. The course PNGs are fetched by ``fkp-fetch-data``, never shipped."""
    if kind not in ART_KINDS:
        raise ValueError(f"unknown kind of art {kind!r}; expected one of {ART_KINDS}")
    if prefer_course:
        path = Path(folder or COURSE_IMAGES_DIR) / COURSE_ART[kind]
        if path.is_file():
            return load_image(path, alpha=True)
    return own_art(kind)
