"""Tests of data_load: keypoints follow the pixels, the flip table, the course transforms, the
dataset, clear errors for bad input, and the data set-up.

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

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import v2

from conftest import (
    FACE_ROW,
    FAKE_SPLITS,
    IMG_H,
    IMG_W,
    MARKER_COLORS,
    build_fake_zip,
    draw_dots,
    face_layout,
    write_keypoints_csv,
)
from facial_keypoints import geometry, images, landmarks, paths
from facial_keypoints.cli import convert_300w
from facial_keypoints.data import course, fetch, w300
from facial_keypoints.training import transforms as T
from helpers_keypoints import needs_data

SEEDS = range(6)


# --------------------------------------------------------------------------------------------
# Helpers: where are the dots?
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# 1. Keypoints follow the content
# --------------------------------------------------------------------------------------------
def test_checker_rejects_keypoints_that_do_not_follow(face_sample, sparse_sample):
    """The dot checks used below can fail: unmoved or shifted keypoints are caught."""
    out = T.RandomHorizontalFlip(p=1.0)(face_sample)
    unmoved = face_sample["keypoints"]
    assert on_dots(out["image"], unmoved).mean() < 0.8
    with pytest.raises(AssertionError):
        assert_markers(out["image"], out["keypoints"], flipped=False)
    shifted = out["keypoints"] + [3.0, 3.0]
    assert on_dots(out["image"], shifted).mean() < 0.8
    # One pixel is enough for the precise check.
    img = sparse_sample["image"]
    with pytest.raises(AssertionError):
        assert_precise(img, sparse_sample["keypoints"] + [1.0, 0.0], 1.0, 0.6)
    assert_precise(img, sparse_sample["keypoints"], 1.0, 0.15)


def test_horizontal_flip_moves_each_index_to_the_mirrored_dot(face_sample, sparse_sample):
    out = T.RandomHorizontalFlip(p=1.0)(face_sample)
    assert out["image"].shape == face_sample["image"].shape
    assert np.array_equal(out["image"], face_sample["image"][:, ::-1])
    assert_on_dots(out["image"], out["keypoints"], min_inside=68)
    assert_markers(out["image"], out["keypoints"], flipped=True)
    # Exactly the mirror (pixel centres: x -> W - 1 - x) of the mirrored index.
    src = face_sample["keypoints"]
    expected = np.stack([IMG_W - 1 - src[:, 0], src[:, 1]], axis=1)[list(landmarks.FLIP_INDICES)]
    np.testing.assert_allclose(out["keypoints"], expected, atol=1e-4)
    # The outer corner of the right eye (36) is the mirrored left-eye corner (45): green dot.
    assert colour_at(out["image"], *out["keypoints"][36]) == (0, 1, 0)
    flipped = T.RandomHorizontalFlip(p=1.0)(sparse_sample)
    assert_precise(flipped["image"], flipped["keypoints"], 1.0, 0.25, min_points=60)


def test_horizontal_flip_p0_and_needs_68_points(face_sample):
    same = T.RandomHorizontalFlip(p=0.0)(face_sample)
    assert same["image"] is face_sample["image"]
    with pytest.raises(ValueError, match="68"):
        T.RandomHorizontalFlip(p=1.0)({"image": face_sample["image"],
                                        "keypoints": face_sample["keypoints"][:5]})


@pytest.mark.parametrize("size", [100, 300, (150, 120), (260, 250)])
def test_rescale_keypoints_follow(face_sample, sparse_sample, size):
    out = T.Rescale(size)(face_sample)
    assert_on_dots(out["image"], out["keypoints"], min_inside=68)
    assert_markers(out["image"], out["keypoints"])
    out = T.Rescale(size)(sparse_sample)
    h, w = out["image"].shape[:2]
    r = max(w / IMG_W, h / IMG_H)
    assert_precise(out["image"], out["keypoints"], r, convention_slack(r) + 0.4, min_points=50)


@pytest.mark.parametrize("size", [150, (120, 160)])
@pytest.mark.parametrize("seed", SEEDS)
def test_random_crop_keypoints_follow(face_sample, sparse_sample, size, seed):
    torch.manual_seed(seed)
    out = T.RandomCrop(size)(face_sample)
    assert_on_dots(out["image"], out["keypoints"], min_inside=10)
    assert_markers(out["image"], out["keypoints"])
    out = T.RandomCrop(size)(sparse_sample)
    assert_precise(out["image"], out["keypoints"], 1.0, 0.25, min_points=15)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_affine_keypoints_follow(face_sample, sparse_sample, seed):
    torch.manual_seed(seed)
    t = T.RandomAffine(degrees=25, translate=(0.05, 0.05), scale=(0.9, 1.1))
    out = t(face_sample)
    assert_on_dots(out["image"], out["keypoints"], min_inside=68)
    assert_markers(out["image"], out["keypoints"])
    moved = np.abs(out["keypoints"] - face_sample["keypoints"]).max()
    out = t(sparse_sample)
    # Rotation centres differ by half a pixel between the image and keypoint kernels.
    assert_precise(out["image"], out["keypoints"], 1.1, convention_slack(1.1) + 0.6,
                   min_points=30)
    assert moved > 0.5  # the transform did something


@pytest.mark.parametrize("seed", SEEDS)
def test_color_jitter_moves_no_keypoint(face_sample, seed):
    torch.manual_seed(seed)
    out = T.ColorJitter(0.4, 0.4)(face_sample)
    assert out["image"].dtype == np.uint8 and out["image"].shape == face_sample["image"].shape
    assert np.array_equal(out["keypoints"], face_sample["keypoints"])
    assert_on_dots(out["image"], out["keypoints"], min_inside=68)
    assert_markers(out["image"], out["keypoints"])


@pytest.mark.parametrize("size", [96, 224])
def test_face_crop_keypoints_follow(face_sample, sparse_sample, size):
    out = T.FaceCrop(size)(face_sample)
    assert out["image"].shape == (size, size, 3)
    assert_on_dots(out["image"], out["keypoints"], min_inside=68)
    assert_markers(out["image"], out["keypoints"])
    # 1.3 times the box's larger side, centred on it.
    pts = out["keypoints"]
    lo, hi = pts.min(0), pts.max(0)
    np.testing.assert_allclose(max(hi - lo), size / 1.3, rtol=0.03)
    np.testing.assert_allclose((lo + hi) / 2, size / 2, atol=0.02 * size)
    if size >= 160:  # the sparse dots stay apart: the precise check
        out = T.FaceCrop(size)(sparse_sample)  # the crop reaches outside the image: padding
        r = size / geometry.upright_square(sparse_sample["keypoints"], 1.3)[2]
        assert_precise(out["image"], out["keypoints"], r, convention_slack(r) + 0.4)


@pytest.mark.parametrize("seed", SEEDS)
def test_face_crop_with_jitter_keypoints_follow(face_sample, sparse_sample, seed):
    torch.manual_seed(seed)
    t = T.FaceCrop(128, jitter_scale=0.1, jitter_shift=0.06)
    out = t(face_sample)
    assert out["image"].shape == (128, 128, 3)
    assert_on_dots(out["image"], out["keypoints"], min_inside=64)
    assert_markers(out["image"], out["keypoints"])
    out = t(sparse_sample)
    # the crop is upright
    r = 128 / (1.1 * geometry.upright_square(sparse_sample["keypoints"], 1.3)[2])
    assert_precise(out["image"], out["keypoints"], r, convention_slack(r) + 0.4)


def test_face_crop_jitter_varies_the_crop(face_sample):
    torch.manual_seed(0)
    t = T.FaceCrop(96, jitter_scale=0.1, jitter_shift=0.06)
    outs = [t(face_sample)["keypoints"] for _ in range(4)]
    assert max(np.abs(o - outs[0]).max() for o in outs[1:]) > 1.0


@pytest.mark.parametrize("crop", [(40, 50, 100), (-30, -20, 150), (75, 95, 120),
                                  (-60.4, 30.6, 260.2)])
def test_crop_face_keypoints_follow(face_sample, sparse_sample, crop):
    size = 128
    image, pts = T.crop_face(face_sample["image"], crop, size, face_sample["keypoints"])
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert_on_dots(image, pts, min_inside=10)
    assert_markers(image, pts)
    image, pts = T.crop_face(sparse_sample["image"], crop, size, sparse_sample["keypoints"])
    r = size / round(crop[2])
    assert_precise(image, pts, r, convention_slack(r) + 0.4, min_points=3)
    assert np.array_equal(T.crop_face(sparse_sample["image"], crop, size), image)


def test_crop_face_pads_outside_with_black():
    img = np.full((50, 60, 3), 200, np.uint8)
    out = T.crop_face(img, (-50, -50, 100), 100)
    assert out[:40, :40].max() == 0          # outside the image
    assert out[60:, 60:].min() == 200        # inside it (away from the resampled edge)
    gray = T.crop_face(img[:, :, 0], (0, 0, 50), 25)
    assert gray.shape == (25, 25)


@pytest.mark.parametrize("seed", SEEDS)
def test_composition_rescale_crop_flip_follows(face_sample, seed):
    torch.manual_seed(seed)
    t = v2.Compose([T.Rescale(250), T.RandomCrop(224), T.RandomHorizontalFlip(0.5),
                       T.RandomAffine(10), T.ColorJitter()])
    out = t(face_sample)
    assert out["image"].shape == (224, 224, 3)
    assert_on_dots(out["image"], out["keypoints"], min_inside=40)


def test_face_transform_augment_false_is_face_crop_then_normalise(face_points):
    size = 96
    face_sample = {"image": draw_dots(face_points), "keypoints": face_points}
    out = T.face_transform(size)(face_sample)
    ref = T.FaceCrop(size, 1.3)(face_sample)
    assert out["image"].shape == (1, size, size) and out["image"].dtype == torch.float32
    assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
    assert out["keypoints"].shape == (68, 2) and out["keypoints"].dtype == torch.float32
    np.testing.assert_allclose(unnormalise(out["keypoints"], size), ref["keypoints"], atol=1e-4)
    gray = ref["image"].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255
    np.testing.assert_allclose(out["image"][0].numpy(), gray, atol=1e-5)
    # Normalised keypoints of a face crop sit around 0, within about [-2, 2].
    assert np.abs(out["keypoints"].numpy()).max() < 2.0
    assert_on_dots(out["image"], unnormalise(out["keypoints"], size), min_inside=68)


def test_face_transform_augmented_keypoints_follow_over_seeds(face_points):
    """Random flips, rotations, jittered crops and colour changes: every keypoint stays on
    its dot; the right eye's outer corner (36, a dim dot) is found at index 36 unless the
    face was mirrored, then at 45; the eyes keep their left/right order."""
    size = 128
    image = draw_dots(face_points, colors={36: (110, 110, 110)})
    sample = {"image": image, "keypoints": face_points}
    t = T.face_transform(size, augment=True)
    seen_flip = set()
    for seed in range(10):
        torch.manual_seed(seed)
        out = t(sample)
        img = out["image"]
        assert img.shape == (1, size, size) and img.dtype == torch.float32
        pts = unnormalise(out["keypoints"], size)
        assert_on_dots(img, pts, min_inside=64)
        right_eye, left_eye = pts[36:42, 0].mean(), pts[42:48, 0].mean()
        assert right_eye < left_eye, f"seed {seed}: eyes swapped (flip without re-indexing?)"
        assert pts[30, 1] < pts[57, 1] and pts[27, 1] < pts[30, 1]  # nose above chin
        g = img[0].numpy()
        level = {i: g[int(round(pts[i, 1])), int(round(pts[i, 0]))] for i in (36, 45)}
        bright = np.median([peak_near(g, x, y) for x, y in pts[17:27]])  # eyebrows
        dim = [i for i in (36, 45) if level[i] < 0.75 * bright]
        assert len(dim) == 1, f"seed {seed}: levels {level}, bright {bright}"
        seen_flip.add(dim[0] == 45)
    assert seen_flip == {False, True}, "both mirrored and plain faces should occur"


def test_face_transform_augmented_is_precise_on_isolated_points():
    """Sub-pixel check through the whole augmenting pipeline, on the points whose dots stand
    alone (jaw, brow ends) in a larger face layout. After a mirror, index i sits on the dot of
    point FLIP_INDICES[i], so only points isolated on both sides are checked."""
    size, width = 160, 130
    pts = face_layout(width=width)
    dist = (np.linalg.norm(pts[:, None] - pts[None], axis=2) + np.eye(68) * 1e9).min(1)
    flip = np.array(landmarks.FLIP_INDICES)
    isolated = np.flatnonzero((dist >= 10.5) & (dist[flip] >= 10.5))
    assert len(isolated) >= 10
    sample = {"image": draw_dots(pts, radius=3.0), "keypoints": pts}
    t = T.face_transform(size, augment=True)
    r = size / (1.3 * width)
    for seed in range(6):
        torch.manual_seed(seed)
        out = t(sample)
        kp = unnormalise(out["keypoints"], size)
        img = as_hwc(out["image"])
        whole = [i for i in isolated if inside(img, kp[[i]], margin=6.0)[0]]  # turned crops
        assert len(whole) >= 6                                              # cut some off
        for i in whole:
            err = np.hypot(*(dot_centre(img, *kp[i], radius=5.0) - kp[i]))
            assert err <= convention_slack(r * 1.1) + 0.7, f"seed {seed}, point {i}: {err:.2f}"


def test_face_transform_flip_0_never_mirrors_and_degrade_keeps_keypoints(face_points):
    """With ``flip=0`` the right eye's dim corner stays at index 36 on every draw; blur, noise
    and occluding patches change pixels only: same keypoints as without them, image in [0, 1]."""
    size = 96
    image = draw_dots(face_points, colors={36: (110, 110, 110)})
    sample = {"image": image, "keypoints": face_points}
    plain = T.face_transform(size, augment=True, flip=0.0)
    damaged = T.face_transform(size, augment=True, flip=0.0, degrade=1.0)
    changed = 0
    for seed in range(6):
        torch.manual_seed(seed)
        a = plain(sample)
        assert_on_dots(a["image"], unnormalise(a["keypoints"], size), min_inside=60)
        pts = unnormalise(a["keypoints"], size)
        assert pts[36:42, 0].mean() < pts[42:48, 0].mean()
        g = a["image"][0].numpy()
        assert g[int(round(pts[36, 1])), int(round(pts[36, 0]))] < \
            g[int(round(pts[45, 1])), int(round(pts[45, 0]))]
        torch.manual_seed(seed)
        b = damaged(sample)
        np.testing.assert_array_equal(b["keypoints"].numpy(), a["keypoints"].numpy())
        assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
        changed += not torch.equal(a["image"], b["image"])
    assert changed == 6


# --------------------------------------------------------------------------------------------
# 2. The flip table
# --------------------------------------------------------------------------------------------
def test_flip_indices_is_an_involutive_permutation():
    f = np.array(landmarks.FLIP_INDICES)
    assert len(f) == 68
    assert sorted(f) == list(range(68))
    assert np.array_equal(f[f], np.arange(68))


@pytest.mark.parametrize("a,b", [(36, 45), (39, 42), (0, 16), (48, 54), (17, 26), (31, 35),
                                 (37, 44), (38, 43), (40, 47), (41, 46), (60, 64), (65, 67),
                                 (55, 59), (8, 8)])
def test_flip_indices_pairs(a, b):
    assert landmarks.FLIP_INDICES[a] == b and landmarks.FLIP_INDICES[b] == a


def test_flip_indices_fixed_points():
    fixed = [i for i in range(68) if landmarks.FLIP_INDICES[i] == i]
    assert fixed == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


def test_flip_of_real_layout_keeps_the_face_semantics():
    pts = np.asarray(FACE_ROW, dtype=np.float64)
    mirrored = np.stack([IMG_W - 1 - pts[:, 0], pts[:, 1]], axis=1)
    assert mirrored[36:42, 0].max() > mirrored[42:48, 0].min()  # without re-indexing: swapped
    flipped = mirrored[list(landmarks.FLIP_INDICES)]
    assert flipped[36:42, 0].max() < flipped[42:48, 0].min()
    assert flipped[0, 0] < flipped[16, 0] and flipped[48, 0] < flipped[54, 0]
    assert flipped[36, 0] < flipped[39, 0] < flipped[42, 0] < flipped[45, 0]
    assert flipped[17, 0] < flipped[21, 0] < flipped[22, 0] < flipped[26, 0]


def _eye_aligned(pts):
    """Faces (n, 68, 2) rotated, scaled and shifted so that 36 -> (-1, 0) and 45 -> (1, 0)."""
    a, b = pts[:, 36], pts[:, 45]
    d = b - a
    ang = -np.arctan2(d[:, 1], d[:, 0])
    rot = np.stack([np.stack([np.cos(ang), -np.sin(ang)], 1),
                    np.stack([np.sin(ang), np.cos(ang)], 1)], 1)
    centred = pts - ((a + b) / 2)[:, None]
    return np.einsum("nij,nkj->nki", rot, centred) * (2 / np.linalg.norm(d, axis=1))[:, None, None]


def _mirror_error(mean, table):
    flipped = np.stack([-mean[:, 0], mean[:, 1]], axis=1)[list(table)]
    return np.linalg.norm(flipped - mean, axis=1)


@needs_data
def test_flip_of_mean_face_is_the_mean_face():
    """The mean training face (eye-aligned) is nearly symmetric: mirroring it and re-indexing
    gives it back to within 0.12 (the eye corners are 2 apart); plausible wrong tables do not."""
    frame = course.read_keypoints_csv(paths.DATA_DIR / course.SPLITS["train"][0])
    mean = _eye_aligned(frame.iloc[:, 1:].to_numpy(np.float64).reshape(-1, 68, 2)).mean(0)
    err = _mirror_error(mean, landmarks.FLIP_INDICES)
    assert err.max() < 0.12, f"point {err.argmax()} off by {err.max():.3f}"
    swaps = [((37, 43), (38, 44)), ((40, 46), (41, 47)), ((49, 52), (50, 53)),
             ((1, 14), (2, 15)), ((18, 24), (19, 25))]
    for (a, b), (c, d) in swaps:
        wrong = list(landmarks.FLIP_INDICES)
        wrong[a], wrong[b], wrong[c], wrong[d] = b, a, d, c
        assert _mirror_error(mean, wrong).max() > 0.15, f"wrong pairs {a}-{b}, {c}-{d} pass"


# --------------------------------------------------------------------------------------------
# 3. crop_face / uncrop_keypoints
# --------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, derandomize=True)
@given(x=st.floats(-150, 250), y=st.floats(-150, 250), side=st.floats(8, 400),
       size=st.sampled_from([32, 96, 112, 224]))
def test_uncrop_inverts_crop_face(x, y, side, size):
    pts = face_layout()
    small = np.zeros((20, 18, 3), np.uint8)  # crops far outside it as well
    _, cropped = T.crop_face(small, (x, y, side), size, pts)
    back = T.uncrop_keypoints(cropped, (x, y, side), size)
    np.testing.assert_allclose(back, pts, atol=0.05 + 1e-5 * np.abs(pts).max() * side)


def test_uncrop_keypoints_known_values():
    back = T.uncrop_keypoints([[0, 0], [112, 56]], (-10.2, 20.4, 200), 224)
    np.testing.assert_allclose(back, [[-10, 20], [-10 + 100, 20 + 50]])


# --------------------------------------------------------------------------------------------
# 4. Course transforms
# --------------------------------------------------------------------------------------------
def test_rescale_int_matches_smaller_edge_and_keeps_aspect():
    tall = {"image": np.zeros((200, 180, 3), np.uint8), "keypoints": np.array([[90, 100.]])}
    out = T.Rescale(90)(tall)
    assert out["image"].shape == (100, 90, 3)
    np.testing.assert_allclose(out["keypoints"], [[45, 50]])
    wide = {"image": np.zeros((120, 300, 3), np.uint8), "keypoints": np.array([[300, 120.]])}
    out = T.Rescale(60)(wide)
    assert out["image"].shape == (60, 150, 3)
    np.testing.assert_allclose(out["keypoints"], [[150, 60]])
    assert out["keypoints"].dtype == np.float32 and out["image"].dtype == np.uint8


def test_rescale_tuple_is_exact_and_gray_stays_2d():
    sample = {"image": np.zeros((200, 180), np.uint8), "keypoints": np.array([[180, 200.]])}
    out = T.Rescale((50, 120))(sample)
    assert out["image"].shape == (50, 120)
    np.testing.assert_allclose(out["keypoints"], [[120, 50]])
    with pytest.raises(AssertionError):
        T.Rescale(1.5)


def test_random_crop_output_size_and_shift():
    img = np.arange(200 * 180).reshape(200, 180).astype(np.int32)
    sample = {"image": img, "keypoints": np.array([[0.0, 0.0]])}
    for seed in range(5):
        torch.manual_seed(seed)
        out = T.RandomCrop((120, 150))(sample)
        assert out["image"].shape == (120, 150)
        top, left = divmod(int(out["image"][0, 0]), 180)
        np.testing.assert_allclose(out["keypoints"], [[-left, -top]])
    torch.manual_seed(0)
    assert T.RandomCrop(224)({"image": np.zeros((224, 230, 3)), "keypoints": np.zeros((1, 2))}
                              )["image"].shape == (224, 224, 3)


def test_random_crop_too_small_raises_helpful_error():
    with pytest.raises(ValueError, match=r"(?s)100x300.*Rescale"):
        T.RandomCrop(224)({"image": np.zeros((100, 300, 3)), "keypoints": np.zeros((1, 2))})


def test_normalize_course_behaviour():
    img = np.zeros((10, 12, 3), np.uint8)
    img[0, 0] = (255, 0, 0)
    img[0, 1] = (255, 255, 255)
    out = T.Normalize()({"image": img, "keypoints": np.array([[100, 150], [0, 50]])})
    assert out["image"].shape == (10, 12) and out["image"].dtype == np.float32
    assert 0 <= out["image"].min() and out["image"].max() <= 1
    np.testing.assert_allclose(out["image"][0, :2], [0.299, 1.0], atol=1e-5)
    np.testing.assert_allclose(out["keypoints"], [[0, 1], [-2, -1]])
    assert out["keypoints"].dtype == np.float32
    out = T.Normalize(56, 28)({"image": img, "keypoints": np.array([[112, 0]])})
    np.testing.assert_allclose(out["keypoints"], [[2, -2]])


def test_normalize_dark_uint8_image_is_still_divided_by_255():
    """A nearly black uint8 photo (grey values 0 or 1) must come out near 0, not 1."""
    img = np.ones((8, 8, 3), np.uint8)
    out = T.Normalize()({"image": img, "keypoints": np.zeros((1, 2))})
    np.testing.assert_allclose(out["image"], 1 / 255, atol=1e-6)
    gray_float = np.full((4, 4), 0.5, np.float32)  # already normalised: left as it is
    out = T.Normalize()({"image": gray_float, "keypoints": np.zeros((1, 2))})
    np.testing.assert_allclose(out["image"], 0.5)


def test_to_tensor_gives_chw_float():
    out = T.ToTensor()({"image": np.full((5, 7, 3), 255, np.uint8),
                         "keypoints": np.zeros((68, 2))})
    assert out["image"].shape == (3, 5, 7) and out["image"].dtype == torch.float32
    assert torch.allclose(out["image"], torch.ones(3, 5, 7))
    assert out["keypoints"].dtype == torch.float32 and out["keypoints"].shape == (68, 2)
    out = T.ToTensor()({"image": np.full((5, 7), 0.25, np.float32), "keypoints": np.zeros((1, 2))})
    assert out["image"].shape == (1, 5, 7) and torch.allclose(out["image"], torch.tensor(0.25))


def test_center_crop_is_the_middle(face_sample):
    out = T.CenterCrop((150, 120))(face_sample)
    assert out["image"].shape == (150, 120, 3)
    top, left = (IMG_H - 150) // 2, (IMG_W - 120) // 2
    assert np.array_equal(out["image"], face_sample["image"][top:top + 150, left:left + 120])
    np.testing.assert_allclose(out["keypoints"], face_sample["keypoints"] - [left, top])
    assert_on_dots(out["image"], out["keypoints"], min_inside=60)
    with pytest.raises(ValueError, match="Rescale"):
        T.CenterCrop(300)(face_sample)


@pytest.mark.parametrize("train", [True, False])
def test_course_transform_keypoints_follow(face_points, train):
    torch.manual_seed(0)
    size = 112
    sample = {"image": draw_dots(face_points), "keypoints": face_points}
    out = T.course_transform(size, train=train)(sample)
    assert out["image"].shape == (1, size, size) and out["keypoints"].shape == (68, 2)
    assert_on_dots(out["image"], unnormalise(out["keypoints"], size), min_inside=60)


def test_course_pipeline_shapes():
    t = v2.Compose([T.Rescale(250), T.RandomCrop(224), T.Normalize(), T.ToTensor()])
    out = t({"image": np.zeros((300, 400, 3), np.uint8), "keypoints": np.zeros((68, 2))})
    assert out["image"].shape == (1, 224, 224) and out["keypoints"].shape == (68, 2)


# --------------------------------------------------------------------------------------------
# 5. The dataset
# --------------------------------------------------------------------------------------------
def test_dataset_sample(fake_dataset):
    ds = course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"])
    assert len(ds) == 18 and ds.filenames == fake_dataset["names"]
    s = ds[4]
    assert set(s) == {"image", "keypoints"}
    assert s["image"].shape == (32, 40, 3) and s["image"].dtype == np.uint8
    assert s["keypoints"].shape == (68, 2) and s["keypoints"].dtype == np.float32
    np.testing.assert_allclose(s["keypoints"], fake_dataset["points"][4], atol=1e-4)
    with_t = course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"],
                                       transform=T.face_transform(32))
    assert with_t[0]["image"].shape == (1, 32, 32)


def test_dataset_keypoint_subset(fake_dataset):
    ds = course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"], keypoints=[30])
    s = ds[2]
    assert s["keypoints"].shape == (1, 2)
    np.testing.assert_allclose(s["keypoints"][0], fake_dataset["points"][2][30], atol=1e-4)


def test_dataset_subset_is_deterministic_per_seed(fake_dataset):
    def make(seed):
        return course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"],
                                         subset=5, seed=seed).filenames

    assert len(make(0)) == 5
    assert make(0) == make(0)
    assert set(make(0)) <= set(fake_dataset["names"])
    assert make(1) != make(0) and len(make(1)) == 5
    full = course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"], subset=100)
    assert len(full) == 18


def test_dataset_names_filter(fake_dataset):
    keep = fake_dataset["names"][3:7]
    ds = course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"],
                                   names=keep + ["Nobody_00.jpg"])
    assert ds.filenames == keep
    np.testing.assert_allclose(ds[0]["keypoints"], fake_dataset["points"][3], atol=1e-4)


def test_dataset_helper_reads_a_data_dir(tmp_path):
    names = ["Ann_Lee_00.jpg", "Ann_Lee_01.jpg"]
    (tmp_path / "test").mkdir()
    for i, n in enumerate(names):
        Image.new("RGB", (30, 20), (i * 50, 0, 0)).save(tmp_path / "test" / n)
    write_keypoints_csv(tmp_path / "test_frames_keypoints.csv", names,
                        [face_layout(width=10, center=(15, 10))] * 2)
    ds = course.dataset("test", data_dir=tmp_path)
    assert len(ds) == 2 and ds[1]["image"].shape == (20, 30, 3)


def _save(path, im, fmt):
    im.save(path, format=fmt)
    return path


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "P", "I;16", "CMYK"])
def test_load_image_reads_by_content(tmp_path, mode):
    w, h = 24, 16
    if mode == "I;16":
        arr = np.full((h, w), 65535, np.uint16)
        arr[:, : w // 2] = 0
        im, fmt = Image.fromarray(arr), "PNG"
        assert im.mode == "I;16"
        expect_left, expect_right = (0, 0, 0), (255, 255, 255)
    elif mode == "CMYK":
        im, fmt = Image.new("CMYK", (w, h), (0, 255, 255, 0)), "JPEG"  # red
        expect_left = expect_right = (255, 0, 0)
    elif mode == "P":
        im = Image.new("RGB", (w, h), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
        fmt = "PNG"
        expect_left = expect_right = (0, 0, 255)
    elif mode == "L":
        im, fmt = Image.new("L", (w, h), 128), "PNG"
        expect_left = expect_right = (128, 128, 128)
    else:
        color = (0, 200, 0, 255)[: len(mode)]
        im, fmt = Image.new(mode, (w, h), color), "PNG"
        expect_left = expect_right = (0, 200, 0)
    path = _save(tmp_path / "face.jpg", im, fmt)  # the extension says JPEG, whatever it is
    arr = images.load_image(path)
    assert arr.shape == (h, w, 3) and arr.dtype == np.uint8
    tol = 6 if fmt == "JPEG" else 0
    np.testing.assert_allclose(arr[h // 2, 1], expect_left, atol=tol)
    np.testing.assert_allclose(arr[h // 2, -2], expect_right, atol=tol)


def test_load_image_drops_alpha_and_turns_exif_rotated_upright(tmp_path):
    arr = np.zeros((10, 20, 4), np.uint8)
    arr[..., 0] = 255
    arr[..., 3] = 0  # fully transparent: the colour stays, alpha is dropped
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    assert images.load_image(tmp_path / "a.png").shape == (10, 20, 3)
    im = Image.new("RGB", (20, 10), (0, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert images.load_image(tmp_path / "rot.jpg").shape == (20, 10, 3)


def test_split_by_person(fake_dataset):
    names = fake_dataset["names"]
    train, val = course.split_by_person(names, val_fraction=0.34, seed=3)
    assert sorted(train + val) == sorted(names)
    assert {course.person_of(n) for n in train}.isdisjoint({course.person_of(n) for n in val})
    assert len({course.person_of(n) for n in val}) == 2
    assert course.split_by_person(names, 0.34, seed=3) == (train, val)
    assert len(course.split_by_person(names, 0.0)[1]) == 3  # at least one person


def test_person_of():
    assert course.person_of("Luis_Fonsi_21.jpg") == "Luis_Fonsi"
    assert course.person_of("data/training/Abdel_Aziz_Al-Hakim_00.jpg") == "Abdel_Aziz_Al-Hakim"
    assert course.person_of("Kim_Jong-Il_10.png") == "Kim_Jong-Il"


@needs_data
def test_split_by_person_on_real_data():
    ds = course.dataset("train")
    train, val = course.split_by_person(ds.filenames, 0.1)
    assert len(train) + len(val) == 3462 and 0.05 < len(val) / 3462 < 0.2
    assert {course.person_of(n) for n in train}.isdisjoint({course.person_of(n) for n in val})


@needs_data
def test_check_dataset_on_real_data():
    assert fetch.check_dataset(paths.DATA_DIR) == []
    s = course.dataset("test")[0]
    h, w = s["image"].shape[:2]
    assert s["keypoints"].shape == (68, 2)
    assert (s["keypoints"] >= -5).all() and (s["keypoints"][:, 0] <= w + 5).all()
    assert (s["keypoints"][:, 1] <= h + 5).all()


# --------------------------------------------------------------------------------------------
# 6. Clear errors for bad input
# --------------------------------------------------------------------------------------------
def test_csv_with_missing_columns(tmp_path):
    csv = tmp_path / "k.csv"
    csv.write_text(",0,1,2\nA_B_00.jpg,1,2,3\n")
    with pytest.raises(course.DataError, match="columns"):
        course.FacialKeypointsDataset(csv, tmp_path)


def test_csv_with_nan_names_the_line(tmp_path):
    csv = tmp_path / "k.csv"
    pts = [face_layout()] * 3
    write_keypoints_csv(csv, ["A_00.jpg", "A_01.jpg", "A_02.jpg"], pts)
    lines = csv.read_text().splitlines()
    lines[2] = lines[2].replace(",", ",,", 1).rsplit(",", 1)[0]  # empty first coordinate
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(course.DataError, match=r"line 3"):
        course.read_keypoints_csv(csv)
    lines[2] = lines[2].replace(",,", ",abc,", 1)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(course.DataError, match=r"non-numeric.*line 3"):
        course.read_keypoints_csv(csv)


def test_missing_csv_tells_how_to_fetch(tmp_path):
    with pytest.raises(course.DataError, match=r"python fetch_data\.py"):
        course.FacialKeypointsDataset(tmp_path / "nope.csv", tmp_path)


def test_empty_csv(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(course.DataError, match="not a readable CSV"):
        course.read_keypoints_csv(tmp_path / "empty.csv")


def test_missing_image_file(fake_dataset):
    (fake_dataset["images"] / fake_dataset["names"][2]).unlink()
    ds = course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"])
    with pytest.raises(images.ImageReadError, match="no such file"):
        ds[2]
    assert ds[3]["image"].shape == (32, 40, 3)


@pytest.mark.parametrize("content", [b"this is not a picture\n", b""])
def test_unreadable_image_file(tmp_path, content):
    (tmp_path / "face.jpg").write_bytes(content)
    with pytest.raises(images.ImageReadError, match="not a readable image"):
        images.load_image(tmp_path / "face.jpg")


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(images.ImageReadError, match=r"cut\.png.*not a readable image"):
        images.load_image(tmp_path / "cut.png")


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(images.ImageReadError, match="folder"):
        images.load_image(tmp_path)


# --------------------------------------------------------------------------------------------
# 7. Data set-up
# --------------------------------------------------------------------------------------------
def listing(folder):
    folder = Path(folder)
    if not folder.exists():
        return None
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def mtimes(folder):
    return {str(p): p.stat().st_mtime_ns for p in Path(folder).rglob("*")}


def test_fetch_from_mirror_extracts_checks_and_marks(fake_mirror, tmp_path):
    target = tmp_path / "data"
    assert not fetch.dataset_ready(target)
    assert fetch.fetch_dataset(target, quiet=True) == target
    assert fetch.dataset_ready(target) and (target / fetch.COMPLETE_MARKER).is_file()
    assert fetch.check_dataset(target) == []
    assert sorted(os.listdir(target)) == sorted(
        [fetch.COMPLETE_MARKER, "test", "test_frames_keypoints.csv", "training",
         "training_frames_keypoints.csv"])  # no temp folder, no __MACOSX
    ds = course.dataset("train", data_dir=target)
    assert len(ds) == 4 and ds[0]["image"].shape == (32, 40, 3)


def test_fetch_second_run_is_a_no_op(fake_mirror, tmp_path):
    target = tmp_path / "data"
    fetch.fetch_dataset(target, quiet=True)
    before = mtimes(target)
    (fake_mirror / fetch.DATA_ZIP).unlink()  # a second extraction could not even start
    fetch.fetch_dataset(target, quiet=True)
    assert mtimes(target) == before


def test_fetch_replaces_stale_pieces_of_an_unfinished_setup(fake_mirror, tmp_path):
    target = tmp_path / "data"
    (target / "training").mkdir(parents=True)
    (target / "training" / "junk.jpg").write_bytes(b"x")
    (target / "test_frames_keypoints.csv").write_text("half a file")
    fetch.fetch_dataset(target, quiet=True)
    assert not (target / "training" / "junk.jpg").exists()
    assert fetch.check_dataset(target) == []


def _corrupt_member(zip_path, member):
    """Flip bytes in the middle of ``member``'s compressed data."""
    with zipfile.ZipFile(zip_path) as z:
        info = z.getinfo(member)
    data = bytearray(zip_path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    mid = start + info.compress_size // 2
    for k in range(mid - 16, mid + 16):
        data[k] ^= 0x5A
    zip_path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "corrupt_member", "missing_image"])
@pytest.mark.parametrize("before", ["absent", "empty", "other_file"])
def test_fetch_bad_zip_leaves_data_dir_as_it_was(fake_mirror, tmp_path, damage, before):
    zip_path = fake_mirror / fetch.DATA_ZIP
    if damage == "truncated":
        zip_path.write_bytes(zip_path.read_bytes()[: zip_path.stat().st_size * 2 // 3])
    elif damage == "corrupt_member":
        _corrupt_member(zip_path, FAKE_SPLITS["train"][0])
    else:
        build_fake_zip(zip_path, drop_image="Ann_Lee_01.jpg")
    target = tmp_path / "data"
    if before != "absent":
        target.mkdir()
    if before == "other_file":
        (target / "notes.txt").write_text("keep me")
    expected = listing(target)
    with pytest.raises(course.DataError) as err:
        fetch.fetch_dataset(target, quiet=True)
    msg = str(err.value)
    assert fetch.DATA_ZIP in msg
    if damage == "missing_image":
        assert "missing" in msg and "Ann_Lee_01.jpg" in msg
    else:
        assert "not a complete zip" in msg
    after = listing(target)
    assert after == expected or (expected is None and after == [])
    assert not fetch.dataset_ready(target)


def test_mirror_that_is_not_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(fetch.MIRROR_ENV, str(tmp_path / "no" / "such" / "mirror"))
    with pytest.raises(course.DataError, match=fetch.MIRROR_ENV):
        fetch.fetch_dataset(tmp_path / "data", quiet=True)


def test_mirror_without_the_zip(monkeypatch, tmp_path):
    monkeypatch.setenv(fetch.MIRROR_ENV, str(tmp_path))
    with pytest.raises(course.DataError, match=f"{fetch.MIRROR_ENV}.*{fetch.DATA_ZIP}"):
        fetch.fetch_dataset(tmp_path / "data", quiet=True)
    assert listing(tmp_path / "data") == []


def test_check_dataset_reports_problems(fake_mirror, tmp_path):
    target = tmp_path / "data"
    fetch.fetch_dataset(target, quiet=True)
    (target / "test" / os.listdir(target / "test")[0]).unlink()
    frame = pd.read_csv(target / "training_frames_keypoints.csv")
    frame.iloc[:3].to_csv(target / "training_frames_keypoints.csv", index=False)
    problems = fetch.check_dataset(target)
    assert len(problems) == 2
    assert any("3 rows, expected 4" in p for p in problems)
    assert any("test/" in p and "missing" in p for p in problems)
    (target / "test_frames_keypoints.csv").unlink()
    assert any("no such keypoint file" in p for p in fetch.check_dataset(target))


# --------------------------------------------------------------------------------------------
# 300-W converter (images + 1-based .pts files -> crops + keypoints.csv)
# --------------------------------------------------------------------------------------------
def _write_pts(path, pts, header=True):
    lines = [f"{x + 1:.3f} {y + 1:.3f}" for x, y in pts]   # .pts files are 1-based
    text = ("version: 1\nn_points: 68\n{\n" + "\n".join(lines) + "\n}\n") if header \
        else "\n".join(lines) + "\n"
    path.write_text(text)


def test_read_pts_both_layouts_are_0_based(tmp_path, face_points):
    for header in (True, False):
        _write_pts(tmp_path / "a.pts", face_points, header)
        np.testing.assert_allclose(w300.read_pts(tmp_path / "a.pts"), face_points, atol=1e-3)
    (tmp_path / "b.pts").write_text("version: 1\nn_points: 5\n{\n1 2\n3 4\n}\n")
    with pytest.raises(course.DataError, match="2 points, expected 68"):
        w300.read_pts(tmp_path / "b.pts")


@pytest.mark.parametrize("where", ["inside", "at the border"])
def test_convert_300w_crops_follow_the_dots(tmp_path, where):
    """Faces drawn as dots (one partly outside the picture) come out as 224-px crops whose
    keypoints sit on the dots, read back through the dataset class; a second folder gets its
    own prefix; nothing is left half-written."""
    w, h = 400, 300
    center = (200, 150) if where == "inside" else (60, 150)
    pts = face_layout(center=center, width=90)
    src = tmp_path / "lfpw" / "trainset"
    src.mkdir(parents=True)
    Image.fromarray(draw_dots(pts, shape=(h, w), radius=3.0)).save(src / "image_0001.png")
    _write_pts(src / "image_0001.pts", pts)
    other = tmp_path / "helen"
    other.mkdir()
    Image.fromarray(draw_dots(pts, shape=(h, w), radius=3.0)).save(other / "1_1.jpg", quality=98)
    _write_pts(other / "1_1.pts", pts, header=False)
    dest = tmp_path / "data" / "300w_train"
    assert convert_300w.main(["--data-dir", str(dest.parent), str(src), f"helen={other}"]) == 0
    ds = course.FacialKeypointsDataset(dest / "keypoints.csv", dest / "images")
    assert ds.filenames == ["trainset_image_0001.jpg", "helen_1_1.jpg"]
    for i in range(2):
        sample = ds[i]
        assert sample["image"].shape == (224, 224, 3)
        kp = sample["keypoints"]
        # the landmark box: centred, its long side half the crop (scale 2.0)
        x0, y0 = kp.min(0)
        x1, y1 = kp.max(0)
        assert abs((x0 + x1) / 2 - 111.5) < 1.5 and abs(max(x1 - x0, y1 - y0) - 112) < 1.5
        jaw = kp[[0, 8, 16]]
        img = as_hwc(sample["image"])
        for x, y in jaw:
            assert np.hypot(*(dot_centre(img, x, y, radius=4.0) - (x, y))) < 0.8
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".convert")]


def test_convert_300w_refuses_a_folder_without_pts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(course.DataError, match="no .pts files"):
        w300.convert_300w([tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_split_300w_keeps_photos_and_listed_duplicates_together(tmp_path):
    names = ["helen_1_1.jpg", "helen_1_2.jpg", "helen_2_1.jpg", "lfpw_image_0001.jpg",
             "lfpw_image_0002.jpg", "lfpw_image_0003.jpg"] + [f"lfpw_image_1{i:03d}.jpg"
                                                             for i in range(40)]
    readme = tmp_path / "README.md"
    readme.write_text("groups:\n  - lfpw_image_0001, lfpw_image_0003\n"
                      "  - helen_2_1, lfpw_image_0002\n")
    group = w300.photo_groups_300w(names, readme)
    assert group["helen_1_1.jpg"] == group["helen_1_2.jpg"] != group["helen_2_1.jpg"]
    assert group["lfpw_image_0001.jpg"] == group["lfpw_image_0003.jpg"]
    assert group["helen_2_1.jpg"] == group["lfpw_image_0002.jpg"]
    for seed in range(5):
        train, held = w300.split_300w(names, 0.3, seed, readme)
        assert sorted(train + held) == sorted(names) and train and held
        assert not {group[n] for n in train} & {group[n] for n in held}
    again = w300.split_300w(names, 0.3, 0, readme)
    assert w300.split_300w(names, 0.3, 0, readme) == again


def test_crop_face_is_torchvisions_resized_crop_where_the_window_meets_the_image():
    """crop_face cuts the window out before converting (faster on big photos); the pixels are
    exactly torchvision's ``resized_crop`` (black outside the image). A window wholly outside
    the image is black (torchvision's own crop would wrap around there: negative indices)."""
    from torchvision.transforms.v2 import functional as TF

    rng = np.random.default_rng(0)
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(5, 200, 2))
        img = rng.integers(0, 256, (h, w, 3) if trial % 2 else (h, w), dtype=np.uint8)
        side = rng.uniform(1, 300)
        x, y = rng.uniform(-side + 1, w - 1), rng.uniform(-side + 1, h - 1)
        size = int(rng.choice([32, 112]))
        top, left, s = int(round(y)), int(round(x)), max(1, int(round(side)))
        ref = TF.resized_crop(T._as_tv_image(img), top, left, s, s, [size, size], antialias=True)
        np.testing.assert_array_equal(T.crop_face(img, (x, y, side), size),
                                      T._from_tv_image(ref, img))
    img = rng.integers(1, 256, (50, 60, 3), dtype=np.uint8)
    assert not T.crop_face(img, (-200, -300, 80), 32).any()
    assert not T.crop_face(img, (70, 10, 20), 32).any()


# --------------------------------------------------------------------------------------------
# Upright crops: a face turned by any angle comes out upright, its dots where its keypoints say
# --------------------------------------------------------------------------------------------
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
