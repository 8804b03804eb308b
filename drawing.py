"""Drawing faces: boxes and keypoints, coloured by region, sized to the picture."""
from __future__ import annotations

import cv2
import numpy as np

from landmarks import REGIONS

REGION_COLORS = {"jaw": (255, 200, 0), "brows": (255, 80, 80), "nose": (80, 220, 80),
                 "eyes": (80, 160, 255), "mouth": (255, 80, 255)}


def draw_faces(image, faces, box_color=(0, 255, 0)):
    """A copy of an RGB image with each face's box and keypoints drawn."""
    out = np.ascontiguousarray(image.copy())
    scale = max(1, round(max(out.shape[:2]) / 500))
    for face in faces:
        x, y, w, h = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x, y), (x + w, y + h), box_color, scale)
        for region, idx in REGIONS.items():
            for px, py in face.keypoints[list(idx)]:
                cv2.circle(out, (int(round(px)), int(round(py))), max(1, scale + 1),
                           REGION_COLORS[region], -1, cv2.LINE_AA)
    return out
