"""Drawing faces: boxes and keypoints, coloured by region, sized to the picture."""
from __future__ import annotations

import cv2
import numpy as np

from facial_keypoints.filters.overlays import apply_filter
from facial_keypoints.geometry import face_outline
from facial_keypoints.landmarks import REGIONS

REGION_COLORS = {"jaw": (255, 200, 0), "brows": (255, 80, 80), "nose": (80, 220, 80),
                 "eyes": (80, 160, 255), "mouth": (255, 80, 255)}


def draw_faces(image, faces, box_color=(0, 255, 0)):
    """A copy of an RGB image with each face's box and keypoints drawn, the dots and lines
    sized to each face (a dot's radius about 1/70 of the face's width, at least 1 px), so that
    neighbouring points stay apart on a big face and visible on a small one. The box is the
    face's own, from its keypoints (brow to chin, ear to ear, turned with the face:
    ``geometry.face_outline``); the detector's box where there are no finite keypoints."""
    out = np.ascontiguousarray(image.copy())
    for face in faces:
        pts = np.asarray(face.keypoints, dtype=np.float64)
        finite = bool(np.isfinite(pts).all())
        width = float(np.ptp(pts[:, 0])) if finite else float(face.box[2])
        radius = max(1, int(round(width / 70)))
        thickness = max(1, radius // 2 + 1)
        if finite:
            corners = np.round(face_outline(pts)).astype(np.int32)
            cv2.polylines(out, [corners], True, box_color, thickness)
        else:
            x, y, w, h = (int(round(v)) for v in face.box)
            cv2.rectangle(out, (x, y), (x + w, y + h), box_color, thickness)
        for region, idx in REGIONS.items():
            for px, py in pts[list(idx)]:
                if np.isfinite(px) and np.isfinite(py):
                    cv2.circle(out, (int(round(px)), int(round(py))), radius,
                               REGION_COLORS[region], -1, cv2.LINE_AA)
    return out


def render(image, faces, filter_name=None):
    """The annotated picture: boxes and keypoints, or (with ``filter_name``) a face filter;
    a face without finite keypoints (``Face.finite``) is not drawn."""
    faces = [f for f in faces if f.finite]
    if filter_name:
        return apply_filter(image, faces, filter_name)
    return draw_faces(image, faces)
