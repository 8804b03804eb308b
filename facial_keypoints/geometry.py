"""Face-crop geometry in numpy: the upright square around a face's keypoints, the affine map
from an image to its crop and back, the roll of the eye line.

Training (``training.transforms.FaceCrop``) and the pipeline cut faces by these same rules.
"""
from __future__ import annotations

import cv2
import numpy as np

from facial_keypoints.images import warp_affine
from facial_keypoints.landmarks import LEFT_EYE_OUTER, RIGHT_EYE_OUTER

#: The face crop's side as a multiple of the larger side of the keypoints' box: the rule the
#: models are trained with (each checkpoint stores its own).
CROP_SCALE = 1.3


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


def face_outline(keypoints, angle=None) -> np.ndarray:
    """The face's own box, brow to chin and ear to ear: the corners (4, 2) of the keypoints'
    bounding box in the face's frame (turned by its roll, ``eye_roll``, or ``angle``), in
    image pixels, in drawing order."""
    pts = np.asarray(keypoints, dtype=np.float64)
    turn = _turn(eye_roll(pts) if angle is None else float(angle))
    q = pts @ turn.T
    (x0, y0), (x1, y1) = q.min(axis=0), q.max(axis=0)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) @ turn


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


def turn_image(image, degrees):
    """The image turned by ``degrees`` (clockwise on screen) about its centre, on a canvas grown
    so that nothing is cut (black corners), and the 2 x 3 matrix that maps its pixels there."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(w * cos + h * sin)), int(np.ceil(w * sin + h * cos))
    m[:, 2] += [(nw - w) / 2, (nh - h) / 2]
    return cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT), m


def wrap_degrees(angle):
    """An angle (or an array of them) in degrees brought to [-180, 180)."""
    return (np.asarray(angle, dtype=np.float64) + 180) % 360 - 180


def mean_roll(rolls) -> tuple[float, float]:
    """The mean of angles in degrees (each a unit vector; -180 to 180) and how well they agree:
    the length of the mean vector, 1 when all are equal, near 0 when they cancel out (0 and
    180 degrees)."""
    a = np.radians(np.asarray(rolls, dtype=np.float64))
    x, y = np.mean(np.cos(a)), np.mean(np.sin(a))
    return float(np.degrees(np.arctan2(y, x))), float(np.hypot(x, y))
