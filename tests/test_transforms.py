"""Tests of the transforms (``training/transforms.py``): keypoints follow the pixels through
every transform and crop, the flip table, the course transforms. ``helpers_dots.py`` says how a
dot's centre is measured and what each transform is held to.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.transforms import v2

from conftest import (
    FACE_ROW,
    IMG_H,
    IMG_W,
    draw_dots,
    face_layout,
)
from facial_keypoints import geometry, landmarks, paths
from facial_keypoints.data import course
from facial_keypoints.training import transforms as T
from helpers_dots import (
    as_hwc,
    assert_markers,
    assert_on_dots,
    assert_precise,
    colour_at,
    convention_slack,
    dot_centre,
    inside,
    on_dots,
    peak_near,
    unnormalise,
)
from helpers_keypoints import needs_data

SEEDS = range(6)


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




def test_every_transform_prints_its_settings():
    """``print(transform)`` in notebook 2 shows each step and its settings, never an object
    address."""
    shown = repr(T.face_transform(96, augment=True, degrade=0.2, gamma=0.3))
    for step in ("RandomHorizontalFlip(p=0.5)", "FaceCrop(96, scale=1.3, jitter_scale=0.1",
                 "jitter_angle=25", "ColorJitter(brightness=0.4, contrast=0.4, saturation=0, "
                 "gamma=0.3)", "Normalize(kp_mean=48, kp_std=24, gray=True)", "ToTensor()",
                 "Degrade(p=0.2)"):
        assert step in shown
    assert "FaceCrop(96, scale=1.3)" in repr(T.face_transform(96))
    for step in (T.RandomAffine(10), T.Rescale(100), T.RandomCrop(50), T.CenterCrop(50)):
        assert " object at 0x" not in repr(step)


def test_contours_draw_each_region_with_its_own_points_and_close_the_rings():
    for region, lines in landmarks.CONTOURS.items():
        points = {i for line in lines for i in line}
        assert points == set(landmarks.REGIONS[region]), region
    rings = landmarks.CONTOURS["eyes"] + landmarks.CONTOURS["mouth"]
    assert all(line[0] == line[-1] for line in rings)               # eyes and lips closed
    assert all(line[0] != line[-1] for line in landmarks.CONTOURS["brows"])
    mirrored = {frozenset(landmarks.FLIP_INDICES[i] for i in line)
                for lines in landmarks.CONTOURS.values() for line in lines}
    assert mirrored == {frozenset(line) for lines in landmarks.CONTOURS.values()
                        for line in lines}                     # a mirror maps lines onto lines
