"""How well do the face detectors find faces? Recall, false boxes and time, side by side.

    python benchmark_detection.py              # every detector of ``detector_configs``
    python benchmark_detection.py --subset 200

Faces found on the course test split and the 300-W crops (a face is found when a box gives a
crop near the labelled one: ``evaluate.match_detection``), false boxes on face-free pictures
bundled with scikit-image, and milliseconds per image.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
import skimage.data
from tqdm import tqdm

from data_300w import dataset_300w
from data_load import CROP_SCALE, dataset
from detectors import HaarFaceDetector
from evaluate import match_detection
from fetch_data import fetch_300w
from images import as_rgb_array
from utils import atomic_write_text

#: Pictures without a face, bundled with scikit-image (no download): false-detection check.
FACE_FREE = ("coffee", "chelsea", "rocket", "coins", "moon", "page", "horse", "hubble_deep_field",
             "text", "grass", "gravel", "brick", "cell", "colorwheel", "logo", "microaneurysms",
             "retina", "immunohistochemistry", "clock", "binary_blobs", "checkerboard",
             "shepp_logan_phantom")


def face_free_images():
    """(name, RGB uint8 image) for each face-free picture, at 1x and rotated/resized variants."""
    for name in FACE_FREE:
        image = as_rgb_array(getattr(skimage.data, name)())
        yield name, image
        yield name + " x2", np.ascontiguousarray(np.repeat(np.repeat(image, 2, 0), 2, 1))


def detection_rates(face_detector, samples, crop_scale=CROP_SCALE):
    """Share of labelled faces found and count of unmatched boxes, over (image, gt) pairs."""
    found = extra = total = 0
    seconds = 0.0
    for image, gt in samples:
        t0 = time.perf_counter()
        boxes = face_detector(image)
        seconds += time.perf_counter() - t0
        total += 1
        hit = match_detection(boxes, gt, crop_scale) is not None
        found += hit
        extra += len(boxes) - hit
    return {"found": found, "faces": total, "found_rate": found / max(total, 1),
            "extra_boxes": extra, "ms_per_image": 1000 * seconds / max(total, 1)}


def detector_configs():
    """The face detectors compared by ``--detection``: the course's plain call, then ours."""
    plain = HaarFaceDetector(work_min=1, work_max=10**9, pad=0.0, min_face=0.0)
    return {
        "plain frontalface_default (course)": plain,
        "HaarFaceDetector (working size + border padding)": HaarFaceDetector(),
        "+ alt2 cascade": HaarFaceDetector(frontal=("haarcascade_frontalface_default.xml",
                                                    "haarcascade_frontalface_alt2.xml")),
        "+ profile cascade (and mirrored)": HaarFaceDetector(profile=True),
    }


def detection_report(subset=None, progress=True):
    """Faces found on the test split and the 300-W crops, false boxes on face-free pictures."""
    sets = {"course test split": dataset("test", subset=subset)}
    if fetch_300w(quiet=True) is not None:
        sets["300-W crops (in the wild)"] = dataset_300w(subset=subset)
    negatives = list(face_free_images())
    rows = []
    for name, det in detector_configs().items():
        row = {"detector": name}
        for set_name, ds in sets.items():
            pairs = ((s["image"], s["keypoints"]) for s in
                     (ds[i] for i in tqdm(range(len(ds)), desc=f"{name[:20]} {set_name[:12]}",
                                          disable=not progress, leave=False)))
            r = detection_rates(det, pairs)
            row[f"{set_name}: found %"] = round(100 * r["found_rate"], 2)
            row[f"{set_name}: extra boxes"] = r["extra_boxes"]
            row[f"{set_name}: ms/image"] = round(r["ms_per_image"], 1)
        row[f"false boxes on {len(negatives)} face-free pictures"] = int(
            sum(len(det(img)) for _, img in negatives))
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subset", type=int, default=None, help="only N faces of each set")
    p.add_argument("--json", help="also write the table to this JSON file")
    args = p.parse_args(argv)
    table = pd.DataFrame(detection_report(args.subset)).set_index("detector").T
    print(table.to_string())
    if args.json:
        atomic_write_text(args.json, table.to_json(indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
