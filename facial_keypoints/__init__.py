"""Facial keypoints: find every face in a picture and put 68 keypoints (iBUG order) on each.

    from facial_keypoints import KeypointPipeline
    pipe = KeypointPipeline()                     # the shipped model, BlazeFace, onnxruntime
    for face in pipe.get_landmarks("photo.jpg"):  # a path or an RGB array
        face.box, face.keypoints                  # (x, y, w, h) and a (68, 2) array
        face.score, face.confidence, face.roll    # detector score, fit confidence, degrees

Where each job lives:

* ``detection``: the face detectors (BlazeFace, Haar, given boxes) and their calibrations;
* ``keypoints``: the keypoint model (``runtime``: onnxruntime or PyTorch), ``KeypointPipeline``
  (``pipeline``), the networks and checkpoints (``nets``, ``checkpoints``, PyTorch), ONNX export;
* ``video``: tracking faces across frames, the One Euro filter, videos through the pipeline;
* ``filters``: drawing, face filters (sunglasses, moustache, hat, blur), face geometry;
* ``training``, ``evaluation``, ``data``: training (PyTorch), metrics and evaluation protocols,
  the datasets and their download;
* ``scale``: whole collections on Ray Data into Parquet (``fkp-batch``, the ``[scale]``
  extra);
* ``serve``: the web page and the JSON API (``fkp-serve``, the ``[serve]`` extra);
* ``geometry``, ``images``, ``landmarks``, ``files``, ``paths``: crop geometry, image files,
  the 68 points' names and regions, safe file writing, where every file is.

Commands: ``fkp-detect`` (``detect``), ``fkp-serve``, ``fkp-batch``, ``fkp-train``,
``fkp-evaluate``, ``fkp-fetch-data``, ``fkp-export``, ``fkp-ship`` (``cli``). Nothing here needs
PyTorch except training, evaluation, the datasets and ``backend="torch"`` (``pip install
'facial-keypoints[train]'``).
"""
from __future__ import annotations

from importlib import metadata

from facial_keypoints.keypoints.pipeline import Face, KeypointPipeline

try:
    __version__ = metadata.version("facial-keypoints")
except metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["Face", "KeypointPipeline", "__version__"]
