"""Face filters: art placed on every face, following its tilt and size, and face blurring.

Everything here works from keypoints (iBUG 68-point order, image pixels, pixel-centre
coordinates) and never from a model::

    from facial_keypoints.filters import overlays
    out = overlays.apply_filter(image, faces, "sunglasses")  # a new image; image is untouched

``faces`` is a list of objects with ``.keypoints`` (and optionally ``.box``), such as
``keypoints.pipeline.Face``, or of (68, 2) arrays. ``FILTERS`` lists the names.

* ``anchor`` (where a piece of art goes: centre, angle, width), ``placement`` (the similarity
  transform from the art's pixels to the image's), ``overlay`` / ``apply_filter`` (warp the
  RGBA art into the image and alpha-blend it; rotation, scale and clipping at the border are
  handled in that one place). The art itself is in ``art.py``, the geometry in
  ``face_geometry.py``.
* privacy: ``blur_faces`` (blur or pixelate every face).
"""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from facial_keypoints.filters.art import ART_KINDS, COURSE_ART, own_art, trim_art
from facial_keypoints.filters.face_geometry import (
    eye_centres,
    eye_line_angle,
    face_keypoints,
    keypoints_of,
    usable,
)
from facial_keypoints.images import as3x3, check_image, load_image, warp_affine
from facial_keypoints.landmarks import (
    CHIN,
    JAW_LEFT_END,
    JAW_RIGHT_END,
    LEFT_BROW,
    LEFT_EYE_OUTER,
    MOUTH_LEFT,
    MOUTH_RIGHT,
    NOSE_BOTTOM,
    RIGHT_BROW,
    RIGHT_EYE_OUTER,
    UPPER_LIP_TOP,
)
from facial_keypoints.paths import COURSE_IMAGES_DIR

#: What ``apply_filter`` knows.
FILTERS = ART_KINDS + ("blur",)

#: Where each kind of art is pinned: the point of the art (as fractions of its width and height,
#: after its transparent margins are trimmed) that lands on the anchor point. Sunglasses and
#: moustache are pinned at their middle; a hat at the line where the head enters it.
ART_PIVOT = {"sunglasses": (0.5, 0.5), "moustache": (0.5, 0.5), "hat": (0.5, 0.8)}

#: The width of each kind of art, as a multiple of a face distance (see ``anchor``).
ART_WIDTH = {"sunglasses": 1.55, "moustache": 1.45, "hat": 1.85}


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
        width = ART_WIDTH[kind] * np.linalg.norm(pts[LEFT_EYE_OUTER] - pts[RIGHT_EYE_OUTER])
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
# Blending
# --------------------------------------------------------------------------------------------
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
    local = (shift @ as3x3(m))[:2]
    warped = warp_affine(premult, local, (x1 - x0, y1 - y0))
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
    out = check_image(image).copy()
    art = trim_art(art)
    pts = keypoints_of(keypoints)
    if usable(pts):
        _blend_into(out, _premultiply(art), placement(pts, kind, art.shape, pivot))
    return out


# --------------------------------------------------------------------------------------------
# Privacy
# --------------------------------------------------------------------------------------------
def face_polygon(face, expand=0.12) -> np.ndarray | None:
    """A convex polygon (N, 2) covering the face, forehead included, grown by ``expand`` about
    its centre. From the keypoints when the face has usable ones, else from ``.box`` (an
    ellipse in the box); ``None`` when there is neither."""
    pts = face_keypoints(face)
    if usable(pts):
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
    out = check_image(image).copy()
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
    image = check_image(image)
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
        pts = face_keypoints(face)
        if usable(pts):
            _blend_into(out, premult, placement(pts, name, shape))
    return out


def _default_art(kind, prefer_course):
    """(trimmed shape, premultiplied art) of ``load_art(kind, prefer_course)``, cached; a
    course PNG is read again when its file changes."""
    path = Path(COURSE_IMAGES_DIR) / COURSE_ART[kind]
    if prefer_course and path.is_file():
        return _prepared_art(kind, str(path), path.stat().st_mtime_ns)
    return _prepared_art(kind, None, None)


@functools.lru_cache(maxsize=16)
def _prepared_art(kind, path, stamp):
    art = trim_art(load_image(path, alpha=True) if path else own_art(kind))
    premult = _premultiply(art)
    premult.flags.writeable = False
    return art.shape, premult
