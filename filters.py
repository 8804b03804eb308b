"""Face filters and other small uses of the 68 keypoints.

Everything here works from keypoints (iBUG 68-point order, image pixels, pixel-centre
coordinates: pixel row ``i``, column ``j`` is the point ``x=j, y=i``) and never from a model::

    import filters
    out = filters.apply_filter(image, faces, "sunglasses")   # a new image; image is untouched

``faces`` is a list of objects with ``.keypoints`` (and optionally ``.box``), such as
``detect.Face``, or of (68, 2) arrays. ``FILTERS`` lists the names.

What is in the module:

* overlays: ``anchor`` (where a piece of art goes: centre, angle, width), ``placement`` (the
  similarity transform from the art's pixels to the image's), ``overlay`` / ``apply_filter``
  (warp the RGBA art into the image with ``cv2.warpAffine`` and alpha-blend it; rotation,
  scale and clipping at the border are handled in that one place);
* the project's own art, drawn by code with OpenCV shapes: ``make_sunglasses``,
  ``make_moustache``, ``make_hat``; ``load_art`` picks the course's PNG instead on request;
* privacy: ``blur_faces`` (blur or pixelate every face);
* geometry: ``align_face`` (eyes level, at fixed positions), ``head_pose`` (yaw, pitch, roll
  from ``cv2.solvePnP``), ``eye_openness`` (eye aspect ratio) and ``mouth_openness``.

Angles follow the image's axes (x to the right, y *down*): an angle of +10 degrees turns
clockwise on the screen. The eye-line angle of a face is the angle of the line from point 36
(the outer corner of the subject's right eye, on the image's left) to point 45.
"""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

import data_load

#: What ``apply_filter`` knows.
FILTERS = ("sunglasses", "moustache", "hat", "blur")
#: The filters that put a piece of art on the face.
ART_KINDS = ("sunglasses", "moustache", "hat")
#: The course's PNG for each kind of art (in ``data_load.COURSE_IMAGES_DIR``).
COURSE_ART = {"sunglasses": "sunglasses.png", "moustache": "moustache.png",
              "hat": "straw_hat.png"}

#: Where each kind of art is pinned: the point of the art (as fractions of its width and height,
#: after its transparent margins are trimmed) that lands on the anchor point. Sunglasses and
#: moustache are pinned at their middle; a hat at the line where the head enters it.
ART_PIVOT = {"sunglasses": (0.5, 0.5), "moustache": (0.5, 0.5), "hat": (0.5, 0.8)}

#: The width of each kind of art, as a multiple of a face distance (see ``anchor``).
ART_WIDTH = {"sunglasses": 1.55, "moustache": 1.45, "hat": 1.85}

# iBUG indices used below
JAW_LEFT_END, JAW_RIGHT_END, CHIN = 0, 16, 8
NOSE_TIP, NOSE_BOTTOM = 30, 33
RIGHT_EYE = list(range(36, 42))   # the subject's right eye: on the image's left
LEFT_EYE = list(range(42, 48))
RIGHT_BROW, LEFT_BROW = list(range(17, 22)), list(range(22, 27))
MOUTH_LEFT, MOUTH_RIGHT, UPPER_LIP_TOP = 48, 54, 51


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def keypoints_of(face) -> np.ndarray | None:
    """The (68, 2) float64 keypoints of a face object (``.keypoints``) or array; ``None`` for a
    face without keypoints."""
    pts = getattr(face, "keypoints", face)
    if pts is None:
        return None
    pts = np.asarray(pts, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"expected (68, 2) keypoints, got shape {pts.shape}")
    return pts


def _face_keypoints(face):
    """Keypoints of a face object or array, or ``None`` when it has none (e.g. a box only)."""
    if hasattr(face, "keypoints"):
        return keypoints_of(face.keypoints)
    if hasattr(face, "box") and not hasattr(face, "shape"):
        return None
    return keypoints_of(face)


def _usable(pts) -> bool:
    return pts is not None and bool(np.isfinite(pts).all())


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or \
            (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"expected a uint8 RGB, RGBA or grayscale image, got {image.dtype} "
                         f"{image.shape}")
    return image


def eye_centres(keypoints):
    """The centres of the subject's right eye (points 36-41, on the image's left) and left eye
    (42-47), as two (2,) arrays."""
    pts = np.asarray(keypoints, dtype=np.float64)
    return pts[RIGHT_EYE].mean(axis=0), pts[LEFT_EYE].mean(axis=0)


def eye_line_angle(keypoints) -> float:
    """Angle in degrees of the line from point 36 to point 45 (positive: clockwise on screen,
    i.e. the image-right eye lower)."""
    pts = np.asarray(keypoints, dtype=np.float64)
    dx, dy = pts[45] - pts[36]
    return float(np.degrees(np.arctan2(dy, dx)))


# --------------------------------------------------------------------------------------------
# Where the art goes
# --------------------------------------------------------------------------------------------
def anchor(keypoints, kind):
    """Where a piece of art of this ``kind`` goes on a face: ``(centre_xy, angle_deg, width_px)``.

    * ``centre_xy``: the image point where the art's pivot (``ART_PIVOT``) is placed;
    * ``angle_deg``: the eye-line angle (36 -> 45), so that a tilted head gets tilted art;
    * ``width_px``: the art's width in image pixels.

    The rules, with *up* the unit vector perpendicular to the eye line pointing to the top of
    the head:

    * ``'sunglasses'``: centred between the eye centres, a quarter of the way up to the brows;
      width ``1.55 x`` the distance between the outer eye corners (36, 45);
    * ``'moustache'``: between the bottom of the nose (33) and the top of the upper lip (51),
      a little closer to the lip; width ``1.45 x`` the mouth width (48, 54);
    * ``'hat'``: above the middle of the brows by ``0.38 x`` the brow-to-chin distance (about
      the hairline); width ``1.85 x`` the jaw width (0, 16), a hat being wider than the head.

    Every rule is built from keypoints with rotations and scalings only, so it follows the face:
    rotate, shift or scale the keypoints and the anchor moves with them.
    """
    if kind not in ART_KINDS:
        raise ValueError(f"unknown kind of art {kind!r}; expected one of {ART_KINDS}")
    pts = np.asarray(keypoints, dtype=np.float64)
    angle = eye_line_angle(pts)
    eye_r, eye_l = eye_centres(pts)
    eye_mid = (eye_r + eye_l) / 2
    brow_mid = pts[RIGHT_BROW + LEFT_BROW].mean(axis=0)
    if kind == "sunglasses":
        centre = eye_mid + 0.25 * (brow_mid - eye_mid)
        width = ART_WIDTH[kind] * np.linalg.norm(pts[45] - pts[36])
    elif kind == "moustache":
        centre = 0.45 * pts[NOSE_BOTTOM] + 0.55 * pts[UPPER_LIP_TOP]
        width = ART_WIDTH[kind] * np.linalg.norm(pts[MOUTH_RIGHT] - pts[MOUTH_LEFT])
    else:  # hat
        a = np.radians(angle)
        up = np.array([np.sin(a), -np.cos(a)])
        centre = brow_mid + up * 0.38 * np.linalg.norm(pts[CHIN] - brow_mid)
        width = ART_WIDTH[kind] * np.linalg.norm(pts[JAW_RIGHT_END] - pts[JAW_LEFT_END])
    return centre, angle, float(width)


def placement(keypoints, kind, art_shape, pivot=None) -> np.ndarray:
    """The 2x3 similarity transform that maps the art's pixels into the image for this face.

    ``art_shape``: the art's (height, width[, channels]) after trimming (``trim_art``; the art
    covers ``[-0.5, w - 0.5] x [-0.5, h - 0.5]`` in its own pixel-centre coordinates).
    ``pivot``: the art point, as fractions of its width and height, that lands on the anchor
    (default ``ART_PIVOT[kind]``). The art is scaled uniformly so that its width becomes the
    anchor's width and rotated by the eye-line angle. Use it with ``cv2.warpAffine``.
    """
    centre, angle, width = anchor(keypoints, kind)
    h, w = art_shape[:2]
    px, py = ART_PIVOT[kind] if pivot is None else pivot
    s = width / w
    a = np.radians(angle)
    rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    src = np.array([px * w - 0.5, py * h - 0.5])
    return np.hstack([rot, (np.asarray(centre) - rot @ src)[:, None]])


# --------------------------------------------------------------------------------------------
# Warping and blending
# --------------------------------------------------------------------------------------------
def _as3x3(m):
    return np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])


def _warp(src, matrix, dsize, border=cv2.BORDER_CONSTANT, border_value=0):
    """``cv2.warpAffine`` that shrinks the source with area averaging first when the transform
    shrinks it a lot (bilinear warping alone would alias), cropping it to the part it needs."""
    m = np.asarray(matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.7:
        w_out, h_out = dsize
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[-0.5, -0.5, 1], [w_out - 0.5, -0.5, 1], [-0.5, h_out - 0.5, 1],
                            [w_out - 0.5, h_out - 0.5, 1]]) @ inv.T
        margin = 2.0 / scale + 2
        x0 = int(max(0, np.floor(corners[:, 0].min() - margin)))
        y0 = int(max(0, np.floor(corners[:, 1].min() - margin)))
        x1 = int(min(src.shape[1], np.ceil(corners[:, 0].max() + margin)))
        y1 = int(min(src.shape[0], np.ceil(corners[:, 1].max() + margin)))
        if x1 <= x0 or y1 <= y0:
            shape = (h_out, w_out) + src.shape[2:]
            return np.full(shape, border_value, dtype=src.dtype)
        sub = src[y0:y1, x0:x1]
        sw, sh = x1 - x0, y1 - y0
        nw, nh = max(1, round(sw * scale)), max(1, round(sh * scale))
        src = cv2.resize(sub, (nw, nh), interpolation=cv2.INTER_AREA)
        # resized pixel (xr, yr) is the source point ((xr + .5) * sw / nw - .5 + x0, ...)
        fx, fy = sw / nw, sh / nh
        back = np.array([[fx, 0, 0.5 * fx - 0.5 + x0], [0, fy, 0.5 * fy - 0.5 + y0], [0, 0, 1]])
        m = (_as3x3(m) @ back)[:2]
    return cv2.warpAffine(src, m, dsize, flags=cv2.INTER_LINEAR, borderMode=border,
                          borderValue=border_value)


def trim_art(art, threshold=8) -> np.ndarray:
    """The RGBA art cut to the bounding box of its visible pixels (alpha > ``threshold``), so
    that sizes and pivots refer to what one sees, not to transparent margins."""
    art = _check_art(art)
    ys, xs = np.nonzero(art[:, :, 3] > threshold)
    if len(xs) == 0:
        return art
    return art[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _check_art(art) -> np.ndarray:
    art = np.asarray(art)
    if art.ndim != 3 or art.shape[2] != 4 or art.dtype != np.uint8:
        raise ValueError(f"art must be an RGBA uint8 array (H, W, 4), got {art.dtype} "
                         f"{art.shape}")
    return art


def _premultiply(art) -> np.ndarray:
    """RGBA uint8 -> float32 (H, W, 4): colour times alpha (0..255) and alpha (0..1).

    Warping premultiplied colour keeps the art's edges from darkening when they are
    interpolated with the transparent surroundings."""
    a = art[:, :, 3:4].astype(np.float32) / 255.0
    return np.concatenate([art[:, :, :3].astype(np.float32) * a, a], axis=2)


def _blend_into(dst, premult, matrix):
    """Warp premultiplied art into ``dst`` (uint8, modified in place) with ``matrix`` (art ->
    image) and alpha-blend it, touching only the pixels the art can reach inside the image."""
    h, w = premult.shape[:2]
    m = np.asarray(matrix, dtype=np.float64)
    if not np.isfinite(m).all():
        return dst
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [-0.5, h - 0.5, 1],
                        [w - 0.5, h - 0.5, 1]]) @ m.T
    H, W = dst.shape[:2]
    x0 = int(max(0, np.floor(corners[:, 0].min()) - 1))
    y0 = int(max(0, np.floor(corners[:, 1].min()) - 1))
    x1 = int(min(W, np.ceil(corners[:, 0].max()) + 2))
    y1 = int(min(H, np.ceil(corners[:, 1].max()) + 2))
    if x1 <= x0 or y1 <= y0:          # entirely outside the image: nothing to do
        return dst
    shift = np.array([[1.0, 0, -x0], [0, 1.0, -y0], [0, 0, 1]])
    local = (shift @ _as3x3(m))[:2]
    warped = _warp(premult, local, (x1 - x0, y1 - y0))
    colour, alpha = warped[:, :, :3], np.clip(warped[:, :, 3:4], 0.0, 1.0)
    roi = dst[y0:y1, x0:x1]
    if dst.ndim == 2:
        gray = colour @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        out = gray + roi.astype(np.float32) * (1.0 - alpha[:, :, 0])
    else:
        out = colour + roi[:, :, :3].astype(np.float32) * (1.0 - alpha)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if dst.ndim == 2:
        dst[y0:y1, x0:x1] = out
    else:
        dst[y0:y1, x0:x1, :3] = out
    return dst


def overlay(image, keypoints, art, kind, pivot=None) -> np.ndarray:
    """A copy of ``image`` with the RGBA ``art`` placed on one face (see ``anchor``).

    The art is trimmed to its visible pixels, warped into the image with the similarity
    transform of ``placement`` and alpha-blended. Art that falls partly outside the image is
    cut at the border; a face with missing (non-finite) keypoints is left alone.
    """
    out = _check_image(image).copy()
    art = trim_art(art)
    pts = keypoints_of(keypoints)
    if _usable(pts):
        _blend_into(out, _premultiply(art), placement(pts, kind, art.shape, pivot))
    return out


# --------------------------------------------------------------------------------------------
# The project's own art, drawn with OpenCV shapes
# --------------------------------------------------------------------------------------------
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


def read_rgba(path) -> np.ndarray:
    """An image file as RGBA uint8 (an image without alpha becomes fully opaque)."""
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgra is None:
        raise ValueError(f"{path}: not a readable image")
    if bgra.dtype != np.uint8:
        bgra = (bgra / 257.0).round().astype(np.uint8) if bgra.dtype == np.uint16 else \
            np.clip(bgra, 0, 255).astype(np.uint8)
    if bgra.ndim == 2:
        bgra = cv2.cvtColor(bgra, cv2.COLOR_GRAY2BGRA)
    elif bgra.shape[2] == 3:
        bgra = cv2.cvtColor(bgra, cv2.COLOR_BGR2BGRA)
    return cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)


def load_art(kind, prefer_course=False, folder=None) -> np.ndarray:
    """The RGBA art for ``kind``: the course's PNG (``COURSE_ART``, from ``folder``, default
    ``data_load.COURSE_IMAGES_DIR``) when ``prefer_course`` and the file is there, else the
    project's own drawing. The course PNGs are fetched by ``data_load.py``, never shipped."""
    if kind not in ART_KINDS:
        raise ValueError(f"unknown kind of art {kind!r}; expected one of {ART_KINDS}")
    if prefer_course:
        path = Path(folder or data_load.COURSE_IMAGES_DIR) / COURSE_ART[kind]
        if path.is_file():
            return read_rgba(path)
    return own_art(kind)


# --------------------------------------------------------------------------------------------
# Privacy
# --------------------------------------------------------------------------------------------
def face_polygon(face, expand=0.12) -> np.ndarray | None:
    """A convex polygon (N, 2) covering the face, forehead included, grown by ``expand`` about
    its centre. From the keypoints when the face has usable ones, else from ``.box`` (an
    ellipse in the box); ``None`` when there is neither."""
    pts = _face_keypoints(face)
    if _usable(pts):
        a = np.radians(eye_line_angle(pts))
        up = np.array([np.sin(a), -np.cos(a)])
        brows = pts[RIGHT_BROW + LEFT_BROW]
        forehead = brows + up * 0.45 * np.linalg.norm(pts[CHIN] - brows.mean(axis=0))
        cloud = np.vstack([pts, forehead])
    else:
        box = getattr(face, "box", None)
        if box is None or not np.isfinite(np.asarray(box, dtype=np.float64)).all():
            return None
        x, y, w, h = (float(v) for v in box)
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        cloud = np.stack([x + w / 2 + w / 2 * np.cos(t), y + h / 2 + h / 2 * np.sin(t)], 1)
    hull = cv2.convexHull(cloud.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    centre = hull.mean(axis=0)
    return centre + (hull - centre) * (1 + expand)


def _smooth(image, sigma):
    """A Gaussian blur; a large one is done on a shrunken copy (the result is smooth anyway)
    and enlarged again, which keeps it fast for big faces."""
    f = min(1.0, 6.0 / sigma)
    if f == 1.0:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))),
                       interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma * f, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def blur_faces(image, faces, mode="blur", expand=0.12, strength=1.0) -> np.ndarray:
    """A copy of ``image`` with every face blurred (``mode='blur'``, a strong Gaussian blur with
    a soft edge) or pixelated (``'pixelate'``, about 10 blocks across the face).

    The region is the convex hull of the keypoints plus the forehead, grown by ``expand``
    (``face_polygon``); a face without keypoints uses its ``.box``. ``strength`` scales the
    blur (sigma = strength x face size / 9) or the block size.
    """
    if mode not in ("blur", "pixelate"):
        raise ValueError(f"mode must be 'blur' or 'pixelate', got {mode!r}")
    out = _check_image(image).copy()
    H, W = out.shape[:2]
    for face in faces:
        poly = face_polygon(face, expand)
        if poly is None:
            continue
        poly = np.clip(poly, -1e6, 1e6)
        size = float(max(np.ptp(poly[:, 0]), np.ptp(poly[:, 1]), 2.0))
        if mode == "blur":
            sigma = max(1.0, strength * size / 9)
            pad = int(np.ceil(3 * sigma))
        else:
            block = max(2, int(round(strength * size / 10)))
            pad = 0
        x0 = int(max(0, np.floor(poly[:, 0].min()) - pad))
        y0 = int(max(0, np.floor(poly[:, 1].min()) - pad))
        x1 = int(min(W, np.ceil(poly[:, 0].max()) + pad + 1))
        y1 = int(min(H, np.ceil(poly[:, 1].max()) + pad + 1))
        if x1 <= x0 or y1 <= y0:
            continue
        roi = out[y0:y1, x0:x1]
        mask = np.zeros(roi.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round((poly - [x0, y0]) * 16).astype(np.int32)], 255,
                     cv2.LINE_AA, shift=4)
        if mode == "blur":
            fuzzy = _smooth(roi, sigma)
            # full strength inside the polygon, fading out over a few pixels beyond its edge
            soft = _smooth(mask, max(1.0, size / 40)).astype(np.float32)
            weight = np.minimum(1.0, np.maximum(soft, mask) * (2.0 / 255.0))
        else:
            nw, nh = max(1, -(-roi.shape[1] // block)), max(1, -(-roi.shape[0] // block))
            small = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
            fuzzy = cv2.resize(small, (nw * block, nh * block),
                               interpolation=cv2.INTER_NEAREST)[:roi.shape[0], :roi.shape[1]]
            cover = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA) > 0
            weight = cv2.resize(cover.astype(np.uint8), (nw * block, nh * block),
                                interpolation=cv2.INTER_NEAREST)[:roi.shape[0], :roi.shape[1]]
            weight = weight.astype(np.float32)
        bx, by, bw, bh = cv2.boundingRect((weight > 0).astype(np.uint8))   # mix only there
        if bw == 0 or bh == 0:
            continue
        win = (slice(by, by + bh), slice(bx, bx + bw))
        weight, fuzzy, part = weight[win], fuzzy[win], roi[win]
        if roi.ndim == 3:
            weight = weight[:, :, None]
        mixed = fuzzy.astype(np.float32) * weight + part.astype(np.float32) * (1 - weight)
        part[...] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------
# The entry point for images and video frames
# --------------------------------------------------------------------------------------------
def apply_filter(image, faces, name, art=None, prefer_course=False) -> np.ndarray:
    """A new image with filter ``name`` (one of ``FILTERS``) applied to every face.

    ``image``: uint8 RGB (H, W, 3), RGBA or grayscale; it is not modified. ``faces``: objects
    with ``.keypoints`` (68, 2) (and ``.box``), e.g. ``detect.Face``, or (68, 2) arrays.
    ``art``: an RGBA uint8 array to use instead of the default art, which is the project's own
    drawing (or the course PNG with ``prefer_course=True`` when it is in images/course/).
    Faces whose keypoints are missing or non-finite are skipped; art is cut at the border.
    """
    if name not in FILTERS:
        raise ValueError(f"unknown filter {name!r}; expected one of {FILTERS}")
    image = _check_image(image)
    faces = list(faces)
    if name == "blur":
        return blur_faces(image, faces)
    out = image.copy()
    if not faces:
        return out
    if art is None:       # the default art, prepared once (video frames call this every frame)
        shape, premult = _default_art(name, prefer_course)
    else:
        art = trim_art(art)
        shape, premult = art.shape, _premultiply(art)
    for face in faces:
        pts = _face_keypoints(face)
        if _usable(pts):
            _blend_into(out, premult, placement(pts, name, shape))
    return out


def _default_art(kind, prefer_course):
    """(trimmed shape, premultiplied art) of ``load_art(kind, prefer_course)``, cached; a
    course PNG is read again when its file changes."""
    path = Path(data_load.COURSE_IMAGES_DIR) / COURSE_ART[kind]
    if prefer_course and path.is_file():
        return _prepared_art(kind, str(path), path.stat().st_mtime_ns)
    return _prepared_art(kind, None, None)


@functools.lru_cache(maxsize=16)
def _prepared_art(kind, path, stamp):
    art = trim_art(read_rgba(path) if path else own_art(kind))
    premult = _premultiply(art)
    premult.flags.writeable = False
    return art.shape, premult


# --------------------------------------------------------------------------------------------
# More uses of keypoints
# --------------------------------------------------------------------------------------------
def aligned_eye_positions(size=128, eye_distance=0.4, eye_y=0.4):
    """Where ``align_face`` puts the eye centres in its ``size`` x ``size`` crop: the image-left
    eye (subject's right) and the image-right eye, in pixel-centre coordinates."""
    cx, y = size / 2 - 0.5, eye_y * size - 0.5
    half = eye_distance * size / 2
    return np.array([cx - half, y]), np.array([cx + half, y])


def align_face(image, keypoints, size=128, eye_distance=0.4, eye_y=0.4,
               border=cv2.BORDER_CONSTANT):
    """Cut a ``size`` x ``size`` crop in which the eyes are level, ``eye_distance x size`` apart
    and at height ``eye_y x size``, symmetric about the vertical middle.

    A similarity transform (rotation, uniform scale, shift) maps the two eye centres (means of
    points 36-41 and 42-47) onto ``aligned_eye_positions``. Returns ``(crop, matrix)`` where
    ``matrix`` (2x3) maps image pixels to crop pixels (apply it to the keypoints with
    ``cv2.transform`` to get them in the crop). Outside the image is black (``border``).
    """
    image = _check_image(image)
    pts = keypoints_of(keypoints)
    src_r, src_l = eye_centres(pts)
    dst_r, dst_l = aligned_eye_positions(size, eye_distance, eye_y)
    p1, p2 = complex(*src_r), complex(*src_l)
    q1, q2 = complex(*dst_r), complex(*dst_l)
    if abs(p2 - p1) < 1e-9 or not np.isfinite([p1.real, p1.imag, p2.real, p2.imag]).all():
        raise ValueError("the eye centres coincide or are not finite: cannot align")
    a = (q2 - q1) / (p2 - p1)
    b = q1 - a * p1
    matrix = np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])
    crop = _warp(image, matrix, (size, size), border=border)
    return crop, matrix


#: A generic 3D face (LearnOpenCV's six-point model, S. Mallick 2016), in model units (about
#: 0.2 mm), written in the camera's axes for a frontal face: x to the image's right, y down,
#: z away from the camera (the nose tip is nearest). Keys are iBUG indices.
MODEL_POINTS_3D = {
    NOSE_TIP: (0.0, 0.0, 0.0),
    CHIN: (0.0, 330.0, 65.0),
    36: (-225.0, -170.0, 135.0),    # outer corner of the subject's right eye (image left)
    45: (225.0, -170.0, 135.0),     # outer corner of the subject's left eye
    MOUTH_LEFT: (-150.0, 150.0, 125.0),
    MOUTH_RIGHT: (150.0, 150.0, 125.0),
}
POSE_INDICES = tuple(MODEL_POINTS_3D)


def camera_matrix(image_size) -> np.ndarray:
    """A pinhole camera for an image of ``image_size`` (height, width[, ...]) or the image
    itself: focal length = the image width, principal point = the image centre."""
    is_image = isinstance(image_size, np.ndarray) and image_size.ndim >= 2
    shape = image_size.shape if is_image else tuple(image_size)
    h, w = float(shape[0]), float(shape[1])
    return np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=np.float64)


def solve_head_pose(keypoints, image_size):
    """``(rvec, tvec, camera)`` from ``cv2.solvePnP`` with ``MODEL_POINTS_3D``: ``rvec`` and
    ``tvec`` map model points into the camera frame (x right, y down, z forward)."""
    pts = keypoints_of(keypoints)
    obj = np.array([MODEL_POINTS_3D[i] for i in POSE_INDICES], dtype=np.float64)
    img = pts[list(POSE_INDICES)].astype(np.float64)
    cam = camera_matrix(image_size)
    dist = np.zeros(4)
    # a frontal face at a distance matching its size is a good starting point
    eye_px = np.linalg.norm(img[2] - img[3])
    z0 = cam[0, 0] * 450.0 / max(eye_px, 1e-6)
    centre = (img[0] - cam[:2, 2]) * z0 / cam[0, 0]
    rvec0 = np.zeros((3, 1))
    tvec0 = np.array([[centre[0]], [centre[1]], [z0]])
    ok, rvec, tvec = cv2.solvePnP(obj, img, cam, dist, rvec0, tvec0, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("solvePnP found no head pose for these keypoints")
    return rvec, tvec, cam


def head_pose(keypoints, image_size):
    """Head pose ``(yaw, pitch, roll)`` in degrees, from ``solvePnP`` with a generic 3D face.

    ``image_size``: (height, width) of the image, e.g. ``image.shape`` (or the image itself);
    the camera is a pinhole with focal length = image width, centred. Sign conventions, as
    seen in the picture:

    * ``yaw > 0``: the face turns towards the image's right (the subject looks to their left);
    * ``pitch > 0``: the face tilts up (chin up);
    * ``roll > 0``: the head leans clockwise on screen (the image-right eye lower), the same
      sign as the eye-line angle used for the overlays.

    Yaw and pitch are the directions the nose points to (its left-right and up-down angles);
    roll is the angle of the model's eye line in the image plane. Frontal is (0, 0, 0).
    """
    rvec, _, _ = solve_head_pose(keypoints, image_size)
    R, _ = cv2.Rodrigues(rvec)
    forward = R @ np.array([0.0, 0.0, -1.0])   # where the nose points (towards the camera)
    across = R @ np.array([1.0, 0.0, 0.0])     # the eye line, from image-left to image-right eye
    yaw = np.degrees(np.arctan2(forward[0], -forward[2]))
    pitch = np.degrees(np.arctan2(-forward[1], np.hypot(forward[0], forward[2])))
    roll = np.degrees(np.arctan2(across[1], across[0]))
    return float(yaw), float(pitch), float(roll)


def eye_openness(keypoints):
    """Eye aspect ratio (Soukupova & Cech 2016) of each eye: ``(|p2-p6| + |p3-p5|) /
    (2 |p1-p4|)``, with p1..p6 = points 36-41 (subject's right eye) and 42-47 (left eye).
    About 0.25-0.35 for an open eye, near 0 for a closed one. Returns ``(right, left)``."""
    pts = keypoints_of(keypoints)

    def ear(p):
        p1, p2, p3, p4, p5, p6 = p
        width = np.linalg.norm(p1 - p4)
        if width < 1e-9:
            return float("nan")
        return float((np.linalg.norm(p2 - p6) + np.linalg.norm(p3 - p5)) / (2 * width))

    return ear(pts[RIGHT_EYE]), ear(pts[LEFT_EYE])


def mouth_openness(keypoints) -> float:
    """The gap between the inner lips over the inner mouth width: the mean of |61-67|, |62-66|
    and |63-65| divided by |60-64|. 0 for a closed mouth; grows as it opens."""
    pts = keypoints_of(keypoints)
    gap = np.mean([np.linalg.norm(pts[a] - pts[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
    width = np.linalg.norm(pts[64] - pts[60])
    if width < 1e-9:
        width = np.linalg.norm(pts[MOUTH_RIGHT] - pts[MOUTH_LEFT])
    return float(gap / width) if width > 1e-9 else float("nan")
