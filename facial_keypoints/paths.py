"""Where things are: the one home of every path the package uses.

Files the package ships (read-only, inside the installed package):

* ``DEFAULT_MODEL`` / ``SHIPPED_ONNX`` / ``SHIPPED_INT8``: the trained keypoint model, as a
  PyTorch checkpoint, as the same network in ONNX and as its INT8 twin (what runs by default),
  with its model card (``keypoints/shipped/``);
* ``BLAZEFACE_DIR``: MediaPipe's BlazeFace detector models with their licence
  (``detection/blazeface_models/``); ``CALIBRATION_FILE``: each detector's box calibration;
* ``DEFAULT_PHOTO``: the bundled public-domain photo (``samples/astronaut.jpg``).

Files that runs download or write live under ``HOME``: the project's checkout when the package
runs from one (the course: ``data/``, ``images/course/``, ``runs/``, ``results/`` at the
repository's top), else a per-user cache (``$XDG_CACHE_HOME/facial-keypoints``, on Windows
``%LOCALAPPDATA%\\facial-keypoints``). The environment variable ``FKP_HOME`` overrides both.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _checkout():
    """The repository folder when the package is imported from a checkout (an editable
    install, or the repository as the working folder): the folder above the package whose
    ``pyproject.toml`` names this project. Else None (an installed package)."""
    project = PACKAGE_DIR.parent / "pyproject.toml"
    try:
        named = 'name = "facial-keypoints"' in project.read_text(encoding="utf-8")
    except OSError:
        return None
    return PACKAGE_DIR.parent if named else None


def _user_cache() -> Path:
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facial-keypoints"


CHECKOUT = _checkout()
HOME = Path(os.environ.get("FKP_HOME") or CHECKOUT or _user_cache())

# -- what the package ships ------------------------------------------------------------------
SHIPPED_DIR = PACKAGE_DIR / "keypoints" / "shipped"
#: The shipped model: a checkpoint (for PyTorch) and the same network as ONNX beside it.
DEFAULT_MODEL = SHIPPED_DIR / "keypoints.pt"
SHIPPED_ONNX = SHIPPED_DIR / "keypoints.onnx"
#: ... and its INT8 twin (``keypoints.quantize``), which the onnx back-end runs by default.
SHIPPED_INT8 = SHIPPED_DIR / "keypoints.int8.onnx"
MODEL_CARD = SHIPPED_DIR / "MODEL_CARD.md"
BLAZEFACE_DIR = PACKAGE_DIR / "detection" / "blazeface_models"
CALIBRATION_FILE = PACKAGE_DIR / "detection" / "calibration.json"
#: The model card's template (``training.ship`` fills it in).
CARD_TEMPLATE = PACKAGE_DIR / "training" / "model_card.md"
#: The bundled photo (NASA, public domain; ``skimage.data.astronaut``).
DEFAULT_PHOTO = PACKAGE_DIR / "samples" / "astronaut.jpg"
#: ``fkp-serve``'s page and its scripts (no CDN).
SERVE_STATIC = PACKAGE_DIR / "serve" / "static"

# -- what runs download or write -------------------------------------------------------------
DATA_DIR = HOME / "data"
COURSE_IMAGES_DIR = HOME / "images" / "course"
RUNS_DIR = HOME / "runs"
RESULTS_DIR = HOME / "results"

#: ``FKP_FAST=1``: notebooks and tests use a small subset of the data (CI).
FAST = os.environ.get("FKP_FAST", "") not in ("", "0")
