"""The course's data: the facial keypoints dataset and its transforms, as the notebooks use them.

Every sample is a dict ``{'image': ..., 'keypoints': (68, 2) array}`` as in the course. The
code lives in the package, one home each, and is imported here under the course's names:

* the dataset (``FacialKeypointsDataset``, ``dataset``, the split of its people):
  ``facial_keypoints/data/course.py``;
* the transforms (``Rescale``, ``RandomCrop``, ``Normalize``, ``ToTensor``, the augmentation,
  ``FaceCrop``, ``face_transform``): ``facial_keypoints/training/transforms.py``;
* the crop geometry (``upright_square``, ``warp_face``, ``eye_roll``, ...):
  ``facial_keypoints/geometry.py``; where the data is: ``facial_keypoints/paths.py``.

The data itself is fetched by ``python fetch_data.py`` (``make data``) into ``data/``.
"""
from __future__ import annotations

# ruff: noqa: F401  (names for the notebooks)
from facial_keypoints.data.course import (
    SPLITS,
    DataError,
    FacialKeypointsDataset,
    dataset,
    person_of,
    person_split,
    read_keypoints_csv,
    split_by_person,
)
from facial_keypoints.geometry import (
    CROP_SCALE,
    crop_matrix,
    cut_window,
    eye_roll,
    keypoint_box,
    square_crop_box,
    unwarp_keypoints,
    upright_square,
    warp_face,
)
from facial_keypoints.paths import COURSE_IMAGES_DIR, DATA_DIR, FAST, HOME
from facial_keypoints.training.transforms import (
    CenterCrop,
    ColorJitter,
    Degrade,
    FaceCrop,
    Normalize,
    RandomAffine,
    RandomCrop,
    RandomHorizontalFlip,
    Rescale,
    ToTensor,
    course_transform,
    crop_face,
    face_transform,
    uncrop_keypoints,
)
