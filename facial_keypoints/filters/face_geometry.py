"""Face geometry from the 68 keypoints: eye line, alignment, head pose, eye and mouth openness.

Keypoints are (68, 2) arrays in image pixels, pixel-centre coordinates (pixel row ``i``, column
``j`` is the point ``x=j, y=i``). Angles follow the image's axes (x to the right, y *down*): an
angle of +10 degrees turns clockwise on the screen. The eye-line angle of a face is the angle
of the line from point 36 (the outer corner of the subject's right eye, on the image's left) to
point 45.
"""
from __future__ import annotations

import cv2
import numpy as np

from facial_keypoints.images import check_image, warp_affine
from facial_keypoints.landmarks import (
    CHIN,
    LEFT_EYE,
    LEFT_EYE_OUTER,
    MOUTH_LEFT,
    MOUTH_RIGHT,
    N_KEYPOINTS,
    NOSE_TIP,
    RIGHT_EYE,
    RIGHT_EYE_OUTER,
)


def keypoints_of(face) -> np.ndarray | None:
    """The (68, 2) float64 keypoints of a face object (``.keypoints``) or array; ``None`` for a
    face without keypoints."""
    pts = getattr(face, "keypoints", face)
    if pts is None:
        return None
    pts = np.asarray(pts, dtype=np.float64)
    if pts.shape != (N_KEYPOINTS, 2):
        raise ValueError(f"expected ({N_KEYPOINTS}, 2) keypoints, got shape {pts.shape}")
    return pts


def face_keypoints(face):
    """Keypoints of a face object or array, or ``None`` when it has none (e.g. a box only)."""
    if hasattr(face, "keypoints"):
        return keypoints_of(face.keypoints)
    if hasattr(face, "box") and not hasattr(face, "shape"):
        return None
    return keypoints_of(face)


def usable(pts) -> bool:
    return pts is not None and bool(np.isfinite(pts).all())


def eye_centres(keypoints):
    """The centres of the subject's right eye (points 36-41, on the image's left) and left eye
    (42-47), as two (2,) arrays."""
    pts = np.asarray(keypoints, dtype=np.float64)
    return pts[RIGHT_EYE].mean(axis=0), pts[LEFT_EYE].mean(axis=0)


def eye_line_angle(keypoints) -> float:
    """Angle in degrees of the line from point 36 to point 45 (positive: clockwise on screen,
    i.e. the image-right eye lower)."""
    pts = np.asarray(keypoints, dtype=np.float64)
    dx, dy = pts[LEFT_EYE_OUTER] - pts[RIGHT_EYE_OUTER]
    return float(np.degrees(np.arctan2(dy, dx)))


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
    image = check_image(image)
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
    crop = warp_affine(image, matrix, (size, size), border=border)
    return crop, matrix


#: A generic 3D face (LearnOpenCV's six-point model, S. Mallick 2016), in model units (about
#: 0.2 mm), written in the camera's axes for a frontal face: x to the image's right, y down,
#: z away from the camera (the nose tip is nearest). Keys are iBUG indices.
MODEL_POINTS_3D = {
    NOSE_TIP: (0.0, 0.0, 0.0),
    CHIN: (0.0, 330.0, 65.0),
    RIGHT_EYE_OUTER: (-225.0, -170.0, 135.0),   # subject's right eye (image left)
    LEFT_EYE_OUTER: (225.0, -170.0, 135.0),     # subject's left eye
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
