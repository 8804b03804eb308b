"""Tests of the crop geometry (``geometry.py``): a face turned by any angle comes out upright,
its dots where its keypoints say.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import (
    draw_dots,
)
from facial_keypoints import geometry, landmarks

ROUND_TRIP_DOTS = (landmarks.RIGHT_EYE_OUTER, landmarks.LEFT_EYE_OUTER, 30, 48, 54)


def _dot_centre(image, x, y, reach=6):
    """The centre of mass of the brightness around (x, y) (pixel-centre coordinates)."""
    gray = np.asarray(image, dtype=np.float64).mean(axis=-1)
    x0, y0 = int(round(x)) - reach, int(round(y)) - reach
    win = gray[y0:y0 + 2 * reach + 1, x0:x0 + 2 * reach + 1]
    ys, xs = np.mgrid[y0:y0 + win.shape[0], x0:x0 + win.shape[1]]
    return np.array([(win * xs).sum(), (win * ys).sum()]) / win.sum()


@pytest.mark.parametrize("degrees", [0, 7, 25, 45, 60, 90, 120, 135, 179, 180, -30, -60, -90,
                                     -135, -170])
def test_upright_crop_round_trip_at_any_angle(degrees):
    size, centre = 128, np.array([240.0, 240.0])
    face = np.asarray(landmarks.FACE_LAYOUT, dtype=np.float64)
    face = (face - face.mean(axis=0)) * 3.0                  # a face about 180 px wide
    a = np.radians(degrees)                                  # clockwise on screen (y down)
    turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = face @ turn.T + centre
    image = draw_dots(pts[list(ROUND_TRIP_DOTS)], shape=(480, 480), radius=6.0)

    crop = geometry.upright_square(pts)
    roll = geometry.eye_roll(face) + degrees          # this face is itself tilted a little
    assert (crop[3] - roll + 180) % 360 - 180 == pytest.approx(0, abs=1e-9)
    out, crop_pts = geometry.warp_face(image, crop, size, pts)
    # upright: the outer eye corners level, the subject's right eye on the picture's left
    right, left = crop_pts[landmarks.RIGHT_EYE_OUTER], crop_pts[landmarks.LEFT_EYE_OUTER]
    assert left[1] == pytest.approx(right[1], abs=1e-3) and left[0] > right[0]
    # the same crop whatever the angle: the face's own frame
    _, upright_pts = geometry.warp_face(image, geometry.upright_square(face + centre), size,
                                        face + centre)
    np.testing.assert_allclose(crop_pts, upright_pts, atol=1e-3)
    # the picture's dots are where the crop's keypoints say
    for i in ROUND_TRIP_DOTS:
        np.testing.assert_allclose(_dot_centre(out, *crop_pts[i]), crop_pts[i], atol=0.25)
    # and the keypoints map back to the image's pixels
    np.testing.assert_allclose(geometry.unwarp_keypoints(crop_pts, crop, size), pts, atol=1e-4)
