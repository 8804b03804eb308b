"""The 68 facial keypoints (iBUG 300-W order): their regions, named points and mirror table.

    jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67

Eyes and brows are named for the subject's side (the subject's right eye, 36-41, is on the
image's left); jaw ends and mouth corners for the image's side.
"""
from __future__ import annotations

N_KEYPOINTS = 68

REGIONS = {
    "jaw": range(0, 17),
    "brows": range(17, 27),
    "nose": range(27, 36),
    "eyes": range(36, 48),
    "mouth": range(48, 68),
}

# Named points
JAW_LEFT_END, CHIN, JAW_RIGHT_END = 0, 8, 16          # image's left, right
NOSE_TIP, NOSE_BOTTOM = 30, 33
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 36, 45      # outer eye corners: the NME normaliser
RIGHT_EYE, LEFT_EYE = list(range(36, 42)), list(range(42, 48))
RIGHT_BROW, LEFT_BROW = list(range(17, 22)), list(range(22, 27))
MOUTH_LEFT, UPPER_LIP_TOP, MOUTH_RIGHT = 48, 51, 54    # image's left, right


def _mirror_pairs():
    pairs = [(i, 16 - i) for i in range(8)]                       # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]                 # brows
    pairs += [(31, 35), (32, 34)]                                 # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]   # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]                       # inner lips
    table = list(range(N_KEYPOINTS))
    for a, b in pairs:
        table[a], table[b] = b, a
    return tuple(table)


#: ``FLIP_INDICES[i]`` is the point that point ``i`` becomes in a mirrored face.
FLIP_INDICES = _mirror_pairs()
