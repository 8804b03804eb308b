"""The 68 facial keypoints (iBUG 300-W order): their regions, named points and mirror table.

    jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67

Eyes and brows are named for the subject's side (the subject's right eye, 36-41, is on the
image's left); jaw ends and mouth corners for the image's side.
"""
from __future__ import annotations

N_KEYPOINTS = 68
#: The mark-ups a model may give the 68 points in: the iBUG 300-W standard (dlib's and
#: face-alignment's) and the course dataset's, which differs on the jaw and nose.
MARKUPS = ("300w", "course")

REGIONS = {
    "jaw": range(0, 17),
    "brows": range(17, 27),
    "nose": range(27, 36),
    "eyes": range(36, 48),
    "mouth": range(48, 68),
}

#: The point sequences to join with lines when drawing a face, by region; a closed outline
#: (an eye, a lip contour) ends with its first point again.
CONTOURS = {
    "jaw": [list(range(0, 17))],
    "brows": [list(range(17, 22)), list(range(22, 27))],
    "nose": [list(range(27, 31)), list(range(31, 36))],
    "eyes": [[*range(36, 42), 36], [*range(42, 48), 42]],
    "mouth": [[*range(48, 60), 48], [*range(60, 68), 60]],
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

#: One real face's 68 points (x, y), in iBUG order: the first row of the course's
#: training_frames_keypoints.csv (Luis_Fonsi_21.jpg), kept here so that simulations and
#: tests have a true face layout without the dataset.
FACE_LAYOUT = (
    [45, 98], [47, 106], [49, 110], [53, 119], [56, 125], [62, 130], [66, 134], [73, 136],
    [81, 139], [92, 134], [96, 130], [98, 126], [102, 120], [102, 111], [104, 105],
    [104, 99], [102, 90], [51, 89], [56, 87], [60, 87], [64, 87], [68, 87], [83, 85],
    [87, 83], [92, 81], [96, 81], [100, 84], [77, 92], [79, 98], [79, 102], [79, 107],
    [73, 109], [75, 109], [79, 111], [81, 109], [83, 109], [58, 94], [62, 92], [64, 92],
    [68, 92], [66, 94], [62, 94], [85, 92], [87, 90], [92, 90], [94, 90], [92, 92], [87, 92],
    [68, 119], [73, 117], [77, 115], [79, 117], [81, 115], [85, 117], [90, 117], [87, 122],
    [85, 124], [81, 124], [77, 124], [73, 121], [70, 119], [77, 119], [79, 119], [83, 119],
    [90, 117], [83, 119], [81, 122], [77, 122],
)
