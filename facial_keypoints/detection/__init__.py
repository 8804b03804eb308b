"""Face detectors: each is a callable ``detector(rgb) -> Detections`` with a ``calibration``
(how its boxes map to the keypoint model's face crop, measured per detector).

* ``blazeface.BlazeFaceDetector``: MediaPipe's BlazeFace, any tilt (the default);
* ``haar.HaarFaceDetector``: OpenCV's Haar cascade, the course's, upright faces;
* ``base.GivenBoxes``: boxes the user gives, read as the Haar cascade draws them.
"""
from __future__ import annotations

from facial_keypoints.detection.base import Detections, DetectorWeightsError, GivenBoxes
from facial_keypoints.detection.blazeface import BlazeFaceDetector
from facial_keypoints.detection.haar import HaarFaceDetector

#: The face detectors by name (``fkp-detect --detector``); the first is the default.
DETECTORS = {"blazeface": BlazeFaceDetector, "haar": HaarFaceDetector}

__all__ = ["DETECTORS", "BlazeFaceDetector", "Detections", "DetectorWeightsError", "GivenBoxes",
           "HaarFaceDetector"]
