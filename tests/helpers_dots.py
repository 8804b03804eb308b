"""Where are the dots? Helpers for the tests that check that keypoints follow the pixels
(test_transforms.py, test_data.py, test_geometry.py).

Coordinate convention of the synthetic images: pixel (row i, column j) is the point (x=j, y=i),
so a dot drawn around (x, y) has its centre of mass at (x, y).

Torchvision's KeyPoints kernels are not quite of one convention: a horizontal flip maps
x -> W - 1 - x (pixel centres at integers, as here: exact), but a resize maps x -> x * r while
the image resize moves a pixel centre x to (x + 0.5) * r - 0.5. So after a resize by ``r`` a
keypoint sits ``0.5 * (r - 1)`` px off the pixel it labelled (< 0.5 px of the source image). The
precise tests allow exactly that offset (``convention_slack``) on top of ~0.4 px for measuring
the centre of a resampled dot; flips and crops are held to 0.25 px.
"""
from __future__ import annotations

import numpy as np
import torch

from conftest import MARKER_COLORS
from facial_keypoints import landmarks


def as_hwc(image):
    """numpy HxW, HxWxC or torch CxHxW -> float HxWxC numpy array."""
    if isinstance(image, torch.Tensor):
        image = image.detach().numpy().transpose(1, 2, 0)
    image = np.asarray(image, dtype=np.float64)
    return image[:, :, None] if image.ndim == 2 else image


def inside(image, pts, margin=1.0):
    h, w = as_hwc(image).shape[:2]
    pts = np.asarray(pts, dtype=np.float64)
    return ((pts[:, 0] >= margin) & (pts[:, 0] <= w - 1 - margin)
            & (pts[:, 1] >= margin) & (pts[:, 1] <= h - 1 - margin))


def peak_near(image, x, y):
    """Brightest value (over channels) in the 3x3 pixels around the pixel nearest (x, y)."""
    img = as_hwc(image)
    h, w = img.shape[:2]
    j, i = int(round(x)), int(round(y))
    patch = img[max(0, i - 1):min(h, i + 2), max(0, j - 1):min(w, j + 2)]
    return float(patch.max()) if patch.size else 0.0


def on_dots(image, pts, frac=0.35):
    """For each point inside the image: is it on a dot (a bright pixel within 1 px)?"""
    img = as_hwc(image)
    top = img.max()
    ok = inside(img, pts)
    return np.array([peak_near(img, x, y) >= frac * top for x, y in np.asarray(pts)])[ok]


def assert_on_dots(image, pts, min_inside=60, allowed_misses=0):
    hits = on_dots(image, pts)
    assert len(hits) >= min_inside, f"only {len(hits)} keypoints left inside the image"
    misses = int((~hits).sum())
    assert misses <= allowed_misses, f"{misses} of {len(hits)} keypoints are not on a dot"


def dot_centre(image, x, y, radius):
    """Intensity-weighted centre of the pixels within ``radius`` of (x, y)."""
    g = as_hwc(image).max(axis=2)
    h, w = g.shape
    x0, x1 = max(0, int(np.floor(x - radius))), min(w, int(np.ceil(x + radius)) + 1)
    y0, y1 = max(0, int(np.floor(y - radius))), min(h, int(np.ceil(y + radius)) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    wgt = g[y0:y1, x0:x1] * (((xx - x) ** 2 + (yy - y) ** 2) <= radius ** 2)
    assert wgt.sum() > 0, f"no dot at all near ({x:.1f}, {y:.1f})"
    return np.array([(wgt * xx).sum() / wgt.sum(), (wgt * yy).sum() / wgt.sum()])


def convention_slack(r):
    """Keypoint offset that torchvision's resize convention gives at scale ``r`` (see top)."""
    return 0.5 * abs(r - 1.0)


def centre_errors(image, pts, scale, dot_radius=3.0):
    """Distance from each keypoint (with its whole dot inside the image) to its dot's centre."""
    window = dot_radius * scale + 3.0
    pts = np.asarray(pts, dtype=np.float64)
    ok = inside(image, pts, margin=window)
    return np.array([np.hypot(*(dot_centre(image, x, y, window) - (x, y)))
                     for x, y in pts[ok]])


def assert_precise(image, pts, scale, tol, min_points=20):
    err = centre_errors(image, pts, scale)
    assert len(err) >= min_points, f"only {len(err)} whole dots left to check"
    assert err.max() <= tol, f"keypoint off its dot by {err.max():.2f} px (allowed {tol:.2f})"


def colour_at(image, x, y):
    """Which channels are lit (> half the image's peak) at the pixel nearest (x, y)."""
    img = as_hwc(image)
    px = img[int(round(y)), int(round(x))]
    return tuple(int(v > img.max() / 2) for v in px)


def signature(rgb):
    return tuple(int(v > 127) for v in rgb)


def assert_markers(image, pts, flipped=False):
    """Each marker index sits on the dot of its own colour (of its mirror after a flip)."""
    for i in MARKER_COLORS:
        source = landmarks.FLIP_INDICES[i] if flipped else i
        x, y = pts[i]
        if not inside(image, [[x, y]], margin=1)[0]:
            continue
        assert colour_at(image, x, y) == signature(MARKER_COLORS[source]), \
            f"keypoint {i} is not on the dot of point {source}"


def unnormalise(keypoints, size):
    return np.asarray(keypoints, dtype=np.float64) * (size / 4) + size / 2

