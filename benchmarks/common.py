"""What the benchmark scripts share: building a pipeline, timing, and writing a table as
Markdown and JSON under ``results/``.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import skimage.data
import torch

from facial_keypoints.detection.base import crop_for_box
from facial_keypoints.files import atomic_write_json, atomic_write_text
from facial_keypoints.images import as_rgb_array
from facial_keypoints.keypoints.pipeline import KeypointPipeline
from facial_keypoints.paths import HOME

TORCH_THREADS = torch.get_num_threads()


def make_pipeline(model, backend, flip_tta=False, detector="blazeface", precision="auto",
                  threads=None):
    """``KeypointPipeline`` set up as ``fkp-detect`` runs it: PyTorch on torch's threads; for
    ONNX, onnxruntime as ``keypoints.runtime.OnnxKeypointModel`` sets it up (and torch, unused
    there, on one thread). ``use_threads(pipe)`` restores that set-up."""
    torch.set_num_threads(1 if backend == "onnx" else TORCH_THREADS)
    pipe = KeypointPipeline(model, detector=detector, flip_tta=flip_tta, backend=backend,
                            precision=precision, threads=threads)
    pipe.torch_threads = torch.get_num_threads()
    return pipe


def set_torch_threads(n):
    """PyTorch's threads for the torch back-end from now on (``--threads``)."""
    global TORCH_THREADS
    TORCH_THREADS = n
    torch.set_num_threads(n)


def use_threads(system):
    torch.set_num_threads(getattr(system, "torch_threads", TORCH_THREADS))


def time_it(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def keypoint_step(pipe, image, box, repeat=200):
    """Median ms for the model on one face (crop + normalise + forward + map back), and for
    the network alone (the runtime's ``predict``: keypoints and confidence)."""
    crop = crop_for_box(box, pipe.crop_scale, pipe.detector.calibration)
    for _ in range(10):
        pipe.keypoints_for_crops(image, [crop])
    crop_prep = time_it(lambda: pipe.keypoints_for_crops(image, [crop]), repeat)
    x = np.zeros((1, 3 if pipe.color else 1, pipe.size, pipe.size), np.float32)
    forward = time_it(lambda: pipe.model.predict(x), repeat)
    return 1000 * statistics.median(crop_prep), 1000 * statistics.median(forward)


def shown(path):
    """A path as the tables name it: relative to the repository when it lies inside."""
    return os.path.relpath(path, HOME) if Path(path).resolve().is_relative_to(HOME) else str(path)


def write_table(rows, out_dir, name, title):
    """Print ``rows`` as a table and write ``<name>.md`` and ``<name>.json`` to ``out_dir``."""
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    out_dir = Path(out_dir)
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in cols) + " |"
              for r in rows]
    md = f"# {title}\n\n" + "\n".join(lines) + "\n"
    atomic_write_text(out_dir / f"{name}.md", md)
    atomic_write_json(out_dir / f"{name}.json", rows)
    return out_dir / f"{name}.md"


#: Pictures without a face, bundled with scikit-image (no download): false-detection check.
FACE_FREE = ("coffee", "chelsea", "rocket", "coins", "moon", "page", "horse", "hubble_deep_field",
             "text", "grass", "gravel", "brick", "cell", "colorwheel", "logo", "microaneurysms",
             "retina", "immunohistochemistry", "clock", "binary_blobs", "checkerboard",
             "shepp_logan_phantom")


def face_free_images():
    """(name, RGB uint8 image) for each face-free picture, at 1x and 2x."""
    for name in FACE_FREE:
        image = as_rgb_array(getattr(skimage.data, name)())
        yield name, image
        yield name + " x2", np.ascontiguousarray(np.repeat(np.repeat(image, 2, 0), 2, 1))


def failures_caught(confidence, bad):
    """Flag faces from the least confident up: how many of the ``bad`` faces the least
    confident tenth holds, the share of them it catches, and the area under the curve of bad
    faces caught against faces flagged (1: every bad face flagged first; 0.5: chance)."""
    order = np.argsort(confidence, kind="stable")      # least confident first
    caught = np.cumsum(bad[order]) / max(bad.sum(), 1)
    flagged = np.arange(1, len(order) + 1) / len(order)
    tenth = int(np.ceil(0.1 * len(order)))
    return {"in the least confident tenth": int(bad[order[:tenth]].sum()),
            "share caught by flagging 10 %": round(float(caught[tenth - 1]), 3)
            if bad.any() else None,
            "AUC (caught vs flagged)": round(float(np.trapezoid(np.r_[0, caught],
                                                                 np.r_[0, flagged])), 3)
            if bad.any() else None}
