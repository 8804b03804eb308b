"""Tests of filters.py: overlay geometry (anchors, rotation, scale), rendering and clipping,
privacy blur, face alignment, head pose, eye and mouth openness, and the project's own art.

Faces use the real layout of the ``face_points`` fixture (a row of the training CSV, written
out in conftest.py), moved, rotated and scaled as each test needs; no model, no dataset.
"""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from facial_keypoints.filters import art, face_geometry
from facial_keypoints.filters import overlays as filters


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def similarity(points, angle_deg=0.0, scale=1.0, about=(0.0, 0.0), shift=(0.0, 0.0)):
    """Rotate ``points`` by ``angle_deg`` (clockwise on screen: y points down) and scale them
    about ``about``, then shift them."""
    a = np.radians(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    about = np.asarray(about, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) - about) @ rot.T + about + np.asarray(shift)


def layout(face_points, centre, width):
    """The fixture's face scaled to ``width`` px (its keypoint box) and centred at ``centre``."""
    pts = np.asarray(face_points, dtype=np.float64)
    lo, hi = pts.min(0), pts.max(0)
    return (pts - (lo + hi) / 2) * (width / (hi - lo)[0]) + np.asarray(centre, dtype=np.float64)


def white_bar(h=40, w=160):
    """Opaque white RGBA art: what it writes into a black image shows where it went."""
    return np.full((h, w, 4), 255, np.uint8)


def blob_stats(gray):
    """Weighted centroid (x, y), principal-axis angle (degrees, in [-90, 90)) and the extent
    along that axis of the pixels covered more than half, for a single-channel image."""
    wts = gray.astype(np.float64) / 255.0
    ys, xs = np.mgrid[:gray.shape[0], :gray.shape[1]]
    total = wts.sum()
    cx, cy = (wts * xs).sum() / total, (wts * ys).sum() / total
    cxx = (wts * (xs - cx) ** 2).sum() / total
    cyy = (wts * (ys - cy) ** 2).sum() / total
    cxy = (wts * (xs - cx) * (ys - cy)).sum() / total
    angle = 0.5 * np.degrees(np.arctan2(2 * cxy, cxx - cyy))
    a = np.radians(angle)
    covered = wts > 0.5
    along = xs[covered] * np.cos(a) + ys[covered] * np.sin(a)
    return np.array([cx, cy]), angle, along.max() - along.min() + 1


def angle_diff(a, b, period=180.0):
    return abs((a - b + period / 2) % period - period / 2)


def noise_image(shape=(300, 320, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def face(face_points):
    """A 150-px-wide upright face in the middle of a 400 x 400 image."""
    return layout(face_points, (200, 210), 150)


# --------------------------------------------------------------------------------------------
# Geometry of the overlays
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", art.ART_KINDS)
@pytest.mark.parametrize("angle", [25.0, -25.0])
def test_anchor_moves_rotates_and_scales_with_the_face(face, kind, angle):
    centre, a0, w0 = filters.anchor(face, kind)
    about, shift = np.array([170.0, 260.0]), np.array([13.0, -7.0])
    moved = similarity(face, angle, 1.5, about, shift)
    c1, a1, w1 = filters.anchor(moved, kind)
    np.testing.assert_allclose(c1, similarity([centre], angle, 1.5, about, shift)[0], atol=1e-6)
    assert angle_diff(a1 - a0, angle, 360) < 1e-6
    assert w1 == pytest.approx(1.5 * w0)


def test_anchors_sit_where_the_art_belongs(face):
    """Upright face: glasses between the eyes and the brows, moustache between the nose and
    the lip, hat above the brows; each as wide as its rule says."""
    brow_y = face[17:27, 1].mean()
    eye_y = face[36:48, 1].mean()
    (gx, gy), ga, gw = filters.anchor(face, "sunglasses")
    assert brow_y < gy <= eye_y and abs(ga) < 10        # this face leans by about 6 degrees
    assert gx == pytest.approx(face[36:48, 0].mean(), abs=3)
    eye_span = np.linalg.norm(face[45] - face[36])
    assert gw == pytest.approx(filters.ART_WIDTH["sunglasses"] * eye_span)
    (mx, my), _, mw = filters.anchor(face, "moustache")
    assert face[33, 1] < my < face[51, 1]
    assert mw == pytest.approx(filters.ART_WIDTH["moustache"] * np.linalg.norm(face[54] - face[48]))
    (hx, hy), _, hw = filters.anchor(face, "hat")
    assert hy < brow_y - 0.2 * (face[8, 1] - brow_y)
    assert hw == pytest.approx(filters.ART_WIDTH["hat"] * np.linalg.norm(face[16] - face[0]))


@pytest.mark.parametrize("kind", art.ART_KINDS)
def test_placement_maps_the_pivot_onto_the_anchor(face, kind):
    art_shape = (90, 240, 4)
    rotated = similarity(face, 25.0, 1.0, (200, 200))
    m = filters.placement(rotated, kind, art_shape)
    centre, angle, width = filters.anchor(rotated, kind)
    px, py = filters.ART_PIVOT[kind]
    pivot = np.array([px * 240 - 0.5, py * 90 - 0.5, 1.0])
    np.testing.assert_allclose(m @ pivot, centre, atol=1e-9)
    # a similarity: the art's top edge becomes `width` long and turns by the eye-line angle
    edge = m[:, :2] @ np.array([240.0, 0.0])
    assert np.linalg.norm(edge) == pytest.approx(width)
    assert np.degrees(np.arctan2(edge[1], edge[0])) == pytest.approx(angle)
    assert np.allclose(m[:, :2] @ m[:, :2].T, (width / 240) ** 2 * np.eye(2))


@pytest.mark.parametrize("angle", [0.0, 25.0, -25.0])
def test_rendered_overlay_centre_and_angle_follow_the_keypoints(face, angle):
    """A white bar placed as sunglasses on a black image: its centroid is the anchor and its
    long axis the eye line, also when the face is rotated by 25 degrees either way."""
    about = np.array([200.0, 200.0])
    pts = similarity(face, angle, 1.0, about)
    black = np.zeros((400, 400, 3), np.uint8)
    out = filters.overlay(black, pts, white_bar(), "sunglasses")
    centroid, axis, extent = blob_stats(out[:, :, 0])
    centre, eye_angle, width = filters.anchor(pts, "sunglasses")
    assert np.linalg.norm(centroid - centre) < 0.75
    assert angle_diff(axis, eye_angle) < 1.0
    assert angle_diff(axis, face_geometry.eye_line_angle(face) + angle) < 1.0
    assert extent == pytest.approx(width, abs=2.5)
    # the centre moved with the face: it is the upright face's anchor, rotated
    upright_centre = filters.anchor(face, "sunglasses")[0]
    np.testing.assert_allclose(centroid, similarity([upright_centre], angle, 1.0, about)[0],
                               atol=0.75)


@pytest.mark.parametrize("kind", ["sunglasses", "moustache"])
def test_overlay_width_doubles_with_the_face(face_points, kind):
    black = np.zeros((500, 500, 3), np.uint8)
    widths = []
    for size in (100, 200):
        pts = layout(face_points, (250, 250), size)
        out = filters.overlay(black, pts, white_bar(30, 150), kind)
        widths.append(blob_stats(out[:, :, 0])[2])
        assert widths[-1] == pytest.approx(filters.anchor(pts, kind)[2], abs=2.5)
    assert widths[1] / widths[0] == pytest.approx(2.0, rel=0.04)


# --------------------------------------------------------------------------------------------
# Rendering: what is written where
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", filters.FILTERS)
def test_filters_write_only_near_the_face(face, name):
    image = noise_image((400, 420, 3))
    out = filters.apply_filter(image, [face], name)
    assert out.shape == image.shape and out.dtype == np.uint8
    changed = np.any(out != image, axis=2)
    assert changed.sum() > 200
    # nothing changes farther from the face than the hat can reach
    ys, xs = np.mgrid[:400, :420]
    centre = face.mean(axis=0)
    far = np.hypot(xs - centre[0], ys - centre[1]) > 1.6 * np.ptp(face[:, 0]) + 20
    assert far.any() and not changed[far].any()


@pytest.mark.parametrize("name", filters.FILTERS)
def test_the_input_image_is_not_modified(face, name):
    image = noise_image((400, 400, 3), seed=3)
    keep = image.copy()
    image.flags.writeable = False          # writing into it would raise
    out = filters.apply_filter(image, [face, similarity(face, 20, 0.6, (0, 0), (60, 40))], name)
    assert np.array_equal(image, keep)
    assert out is not image and not np.shares_memory(out, image)


@pytest.mark.parametrize("name", filters.FILTERS)
def test_faces_partly_or_entirely_outside_the_image(face_points, name):
    image = noise_image((240, 260, 3), seed=1)
    corner = layout(face_points, (20, 85), 160)          # half off the left edge, hat off the top
    out = filters.apply_filter(image, [corner], name)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)                # the part inside is drawn
    assert np.array_equal(out[200:, 190:], image[200:, 190:])
    huge = layout(face_points, (130, 120), 3000)         # much bigger than the image
    assert filters.apply_filter(image, [huge], name).shape == image.shape
    for away in [layout(face_points, (-900, -700), 150), layout(face_points, (5e4, 3e4), 150),
                 layout(face_points, (1e12, -1e12), 150), np.full((68, 2), np.nan)]:
        assert np.array_equal(filters.apply_filter(image, [away], name), image)


def test_every_face_gets_the_filter_and_face_objects_work(face_points):
    image = np.zeros((300, 500, 3), np.uint8)
    left, right = layout(face_points, (120, 150), 120), layout(face_points, (380, 150), 120)
    faces = [SimpleNamespace(box=np.array([60, 90, 120, 120.0]), keypoints=left),
             SimpleNamespace(box=np.array([320, 90, 120, 120.0]), keypoints=right)]
    art = white_bar()
    out = filters.apply_filter(image, faces, "sunglasses", art=art)
    assert np.array_equal(out, filters.apply_filter(image, [left, right], "sunglasses", art=art))
    assert out[:, :250].any() and out[:, 250:].any()
    assert np.array_equal(filters.apply_filter(image, [], "hat"), image)
    with pytest.raises(ValueError, match="unknown filter"):
        filters.apply_filter(image, faces, "bunny_ears")


def test_grayscale_and_rgba_images(face):
    for image in (noise_image((400, 400)), noise_image((400, 400, 4))):
        out = filters.apply_filter(image, [face], "sunglasses")
        assert out.shape == image.shape and not np.array_equal(out, image)
        if image.ndim == 3:
            assert np.array_equal(out[:, :, 3], image[:, :, 3])   # alpha is left alone


def test_alpha_blending_mixes_by_alpha(face):
    """Half-transparent white art on black gives mid grey; fully transparent art nothing."""
    black = np.zeros((400, 400, 3), np.uint8)
    half = white_bar()
    half[:, :, 3] = 128
    c = np.round(filters.anchor(face, "sunglasses")[0]).astype(int)
    out = filters.overlay(black, face, half, "sunglasses")
    assert out[c[1], c[0]] == pytest.approx([128, 128, 128], abs=1)
    clear = white_bar()
    clear[:, :, 3] = 0
    assert not filters.overlay(black, face, clear, "sunglasses").any()


# --------------------------------------------------------------------------------------------
# Privacy
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["blur", "pixelate"])
def test_blur_hides_the_face_and_leaves_the_rest(face, mode):
    image = noise_image((400, 400, 3), seed=2)
    out = filters.blur_faces(image, [face], mode=mode)
    inside = np.zeros((400, 400), np.uint8)
    cv2.fillConvexPoly(inside, cv2.convexHull(face.astype(np.int32)), 1)
    diff = np.abs(out.astype(int) - image.astype(int)).mean(axis=2)
    assert diff[inside == 1].mean() > 40                 # noise (sd ~74) is smoothed away
    assert out[inside == 1].std() < image[inside == 1].std() / 2
    poly = filters.face_polygon(face)
    reach = 3 * max(np.ptp(poly[:, 0]), np.ptp(poly[:, 1])) / 9 + 2
    ys, xs = np.mgrid[:400, :400]
    outside = cv2.pointPolygonTest
    far = np.array([outside(poly.astype(np.float32), (float(x), float(y)), True) < -reach
                    for x, y in zip(xs[::7, ::7].ravel(), ys[::7, ::7].ravel())])
    sample = diff[::7, ::7].ravel()
    assert far.sum() > 100 and not sample[far].any()


def test_blur_uses_the_box_when_there_are_no_keypoints():
    image = noise_image((200, 200, 3), seed=4)
    face = SimpleNamespace(box=np.array([50.0, 60.0, 80.0, 80.0]), keypoints=None)
    out = filters.blur_faces(image, [face])
    assert out[100, 90].tolist() != image[100, 90].tolist() or \
        np.abs(out[80:120, 70:110].astype(int) - image[80:120, 70:110]).mean() > 30
    assert np.array_equal(out[:, :15], image[:, :15])


# --------------------------------------------------------------------------------------------
# Alignment, pose, openness
# --------------------------------------------------------------------------------------------
def test_align_face_puts_the_eyes_where_asked(face_points):
    pts = layout(face_points, (230, 180), 170)
    pts = similarity(pts, -18.0, 1.0, (230, 180))
    right, left = face_geometry.eye_centres(pts)
    image = np.zeros((360, 420, 3), np.uint8)
    for (x, y), colour in ((right, (255, 0, 0)), (left, (0, 255, 0))):
        cv2.circle(image, (int(round(x * 16)), int(round(y * 16))), 5 * 16, colour, -1,
                   cv2.LINE_AA, shift=4)
    size, d = 128, 0.4
    crop, m = face_geometry.align_face(image, pts, size=size, eye_distance=d)
    assert crop.shape == (size, size, 3) and m.shape == (2, 3)
    want_r, want_l = face_geometry.aligned_eye_positions(size, d)
    got = cv2.transform(np.array([[right, left]]), m)[0]
    np.testing.assert_allclose(got, [want_r, want_l], atol=1e-6)
    assert want_r[1] == want_l[1]                                    # level
    assert want_l[0] - want_r[0] == pytest.approx(d * size)
    for channel, want in ((0, want_r), (1, want_l)):                # the pixels went there too
        centroid = blob_stats(crop[:, :, channel])[0]
        assert np.linalg.norm(centroid - want) < 1.0


def project_model(rvec_deg, image_shape=(480, 640), distance=2500.0):
    """68 keypoints (only the pose points filled) from the 3D model seen with rotation
    ``rvec_deg`` (a rotation vector in degrees) by the camera ``head_pose`` assumes."""
    obj = np.array([face_geometry.MODEL_POINTS_3D[i] for i in face_geometry.POSE_INDICES],
                   np.float64)
    rvec = np.radians(np.asarray(rvec_deg, dtype=np.float64))
    tvec = np.array([20.0, -30.0, distance])
    camera = face_geometry.camera_matrix(image_shape)
    img, _ = cv2.projectPoints(obj, rvec, tvec, camera, np.zeros(4))
    pts = np.zeros((68, 2))
    pts[list(face_geometry.POSE_INDICES)] = img.reshape(-1, 2)
    return pts


def test_head_pose_of_a_frontal_face_is_zero():
    yaw, pitch, roll = face_geometry.head_pose(project_model([0, 0, 0]), (480, 640))
    assert max(abs(yaw), abs(pitch), abs(roll)) < 1.0


@pytest.mark.parametrize("degrees", [20.0, -35.0])
def test_head_pose_yaw_sign_and_size(degrees):
    # turning towards the image's right is a rotation by -degrees about the camera's y (down)
    pts = project_model([0, -degrees, 0])
    nose_x, eyes_x = pts[30, 0], (pts[36, 0] + pts[45, 0]) / 2
    assert np.sign(nose_x - eyes_x) == np.sign(degrees)             # the nose shows the turn
    yaw, pitch, roll = face_geometry.head_pose(pts, (480, 640))
    assert yaw == pytest.approx(degrees, abs=3.0)
    assert abs(pitch) < 3.0 and abs(roll) < 3.0


@pytest.mark.parametrize("degrees", [15.0, -15.0])
def test_head_pose_pitch_and_roll_signs(degrees):
    up = face_geometry.head_pose(project_model([-degrees, 0, 0]), (480, 640))   # chin up for > 0
    assert up[1] == pytest.approx(degrees, abs=3.0) and abs(up[0]) < 3.0
    pts = project_model([0, 0, degrees])                            # clockwise on screen
    roll = face_geometry.head_pose(pts, np.zeros((480, 640, 3), np.uint8))[2]
    assert roll == pytest.approx(degrees, abs=3.0)
    assert np.sign(roll) == np.sign(face_geometry.eye_line_angle(pts))


def test_eye_openness_falls_when_the_eyelids_close(face):
    open_r, open_l = face_geometry.eye_openness(face)
    assert 0.12 < open_r < 0.6 and 0.12 < open_l < 0.6
    closed = face.copy()
    # both lids onto the corner-to-corner line, the lower lid's points meeting the upper's
    for a, b, upper, lower in ((36, 39, [37, 38], [41, 40]), (42, 45, [43, 44], [47, 46])):
        p, q = closed[a], closed[b]
        for u, v in zip(upper, lower):
            t = np.dot(closed[u] - p, q - p) / np.dot(q - p, q - p)
            closed[u] = closed[v] = p + t * (q - p)
    shut_r, shut_l = face_geometry.eye_openness(closed)
    assert shut_r < 1e-9 and shut_l < 1e-9
    half = (face + closed) / 2
    assert shut_r < face_geometry.eye_openness(half)[0] < open_r


def test_mouth_openness_rises_when_the_lips_part(face):
    closed = face.copy()
    closed[[65, 66, 67]] = closed[[63, 62, 61]]
    shut = face_geometry.mouth_openness(closed)
    assert shut == pytest.approx(0.0, abs=1e-9)
    previous = shut
    for gap in (5.0, 10.0, 20.0):
        opened = closed.copy()
        opened[[65, 66, 67], 1] += gap
        value = face_geometry.mouth_openness(opened)
        assert value > previous
        previous = value


# --------------------------------------------------------------------------------------------
# Art
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("maker", [art.make_sunglasses, art.make_moustache,
                                   art.make_hat])
def test_own_art_is_rgba_with_a_transparent_background(maker):
    made = maker(240)
    assert made.dtype == np.uint8 and made.ndim == 3 and made.shape[2] == 4
    assert made.shape[1] == 240
    alpha = made[:, :, 3]
    assert alpha[0, 0] == alpha[0, -1] == alpha[-1, 0] == alpha[-1, -1] == 0
    assert (alpha == 255).mean() > 0.15 and (alpha == 0).mean() > 0.1
    mirrored = np.abs(made[:, ::-1, 3].astype(int) - alpha).mean()
    assert mirrored < 2.0                                  # left-right symmetric shapes
    assert maker(480).shape[1] == 480


def test_load_art_prefers_the_course_png_only_when_asked_and_present(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[5:15, 5:25] = (255, 0, 0, 255)                  # red, opaque
    cv2.imwrite(str(tmp_path / "sunglasses.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    course = art.load_art("sunglasses", prefer_course=True, folder=tmp_path)
    assert np.array_equal(course, rgba)
    own = art.own_art("sunglasses")
    assert np.array_equal(art.load_art("sunglasses", folder=tmp_path), own)
    assert np.array_equal(art.load_art("hat", prefer_course=True, folder=tmp_path),
                          art.own_art("hat"))            # no straw_hat.png there
    own[:] = 0                                              # a copy: the cache is unharmed
    assert art.own_art("sunglasses").any()
    with pytest.raises(ValueError):
        art.load_art("blur")


def test_apply_filter_uses_the_course_png_on_request(tmp_path, monkeypatch, face):
    red = np.zeros((30, 90, 4), np.uint8)
    red[:, :] = (255, 0, 0, 255)
    cv2.imwrite(str(tmp_path / "sunglasses.png"), cv2.cvtColor(red, cv2.COLOR_RGBA2BGRA))
    monkeypatch.setattr(filters, "COURSE_IMAGES_DIR", tmp_path)
    black = np.zeros((400, 400, 3), np.uint8)
    is_red = lambda img: (img[:, :, 0] == 255) & (img[:, :, 1] == 0)   # noqa: E731
    course = filters.apply_filter(black, [face], "sunglasses", prefer_course=True)
    assert is_red(course).sum() > 500
    own = filters.apply_filter(black, [face], "sunglasses")
    assert own.any() and not is_red(own).any()
