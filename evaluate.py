"""Evaluate a keypoint model: the test protocols and the command.

Two protocols on the official 770-frame test split::

    python evaluate.py --model saved_models/keypoints_resnet18.pt            # both protocols
    python evaluate.py --protocol crop      # (a) the model on face crops from the ground truth
    python evaluate.py --protocol pipeline  # (b) detection -> crop -> model -> image
    python evaluate.py --split val          # the model's own validation people
    python evaluate.py --calibrate          # measure the face detector's box -> crop rule

Protocol (b) is what a user gets: a face the detector misses is a failure. The metrics are in
``metrics.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from data_300w import dataset_300w, split_300w_files
from data_load import dataset, keypoint_box, person_split, square_crop_box
from detectors import HaarFaceDetector, calibrate, crop_for_box
from fetch_data import fetch_300w
from landmarks import N_KEYPOINTS
from metrics import format_metrics, summarize
from models import DEFAULT_MODEL
from pipeline import FaceKeypointDetector
from utils import atomic_write_json

PROTOCOL_TITLES = {"crop": "(a) model on ground-truth face crops",
                   "pipeline": "(b) full pipeline: Haar detection -> crop -> model"}


def match_detection(boxes, gt, crop_scale, calibration=None, size_factor=1.5):
    """Index of the detected box that covers the labelled face, or ``None``.

    A box matches when the crop it gives is centred within a quarter of the face's size of the
    labelled face's centre and its size is within ``size_factor`` of the labelled crop's.
    """
    if len(boxes) == 0:
        return None
    gx, gy, gside = square_crop_box(keypoint_box(gt), crop_scale)
    gc = np.array([gx + gside / 2, gy + gside / 2])
    best, best_d = None, np.inf
    for i, box in enumerate(boxes):
        x, y, side = crop_for_box(box, crop_scale, calibration)
        d = np.linalg.norm(np.array([x + side / 2, y + side / 2]) - gc)
        if d < 0.25 * gside and 1 / size_factor < side / gside < size_factor and d < best_d:
            best, best_d = i, d
    return best


def evaluate(detector, split="test", protocol="pipeline", subset=None, progress=True, names=None):
    """Predictions for every face of a split under a protocol; returns (summary, details).

    ``split``: ``"test"`` (the course test split), ``"train"``, ``"val"`` (the people that the
    model's own training run held out, read from its checkpoint: where settings are chosen,
    never on the test split), or ``"300w"``: the 300-W crops,
    faces from outside the course dataset (in the wild, another mark-up convention). ``names``
    restricts it to those files.

    ``protocol='crop'``: the model on the face crop derived from the labelled keypoints.
    ``protocol='pipeline'``: detection -> crop -> model; a missed face is a failure.
    """
    if split == "300w":
        if fetch_300w(quiet=True) is None:
            raise FileNotFoundError("the 300-W crops are not in data/300w_train: set "
                                    "FKP_DATA_MIRROR or convert them (python data_load.py "
                                    "--convert-300w)")
        ds = dataset_300w(subset=subset, names=names)
    elif split == "val":
        _, val_names = person_split(detector.meta.get("train_config"))
        ds = dataset("train", subset=subset, names=names or val_names)
    else:
        ds = dataset(split, subset=subset, names=names)
    preds, gts, detections, seconds = [], [], 0, 0.0
    for i in tqdm(range(len(ds)), desc=f"{split} ({protocol})", disable=not progress):
        sample = ds[i]
        image, gt = sample["image"], sample["keypoints"]
        t0 = time.perf_counter()
        if protocol == "crop":
            crop = square_crop_box(keypoint_box(gt), detector.crop_scale)
            pred = detector.keypoints_for_crops(image, [crop])[0]
        else:
            boxes = detector.detect_faces(image)
            detections += len(boxes)
            j = match_detection(boxes, gt, detector.crop_scale)
            pred = (np.full((N_KEYPOINTS, 2), np.nan) if j is None
                    else detector.keypoints_for_boxes(image, boxes[j:j + 1])[0])
        seconds += time.perf_counter() - t0
        preds.append(pred)
        gts.append(gt)
    summary = summarize(np.array(preds), np.array(gts))
    summary["protocol"] = protocol
    summary["ms_per_image"] = 1000 * seconds / max(len(ds), 1)
    if protocol == "pipeline":
        summary["extra_detections"] = detections - summary["faces_found"]
    return summary, {"pred": np.array(preds), "gt": np.array(gts), "files": ds.filenames}


def predict_loader(model, loader, kp_mean, kp_std):
    """Run ``model`` over a loader of normalised samples.

    Returns ``(pred, gt, images)``: keypoints (N, 68, 2) in the model input's pixels and the
    input images (N, H, W) in [0, 1].
    """
    model.eval()
    preds, gts, images = [], [], []
    with torch.inference_mode():
        for batch in loader:
            out = model(batch["image"]).view(-1, N_KEYPOINTS, 2)
            preds.append(out.numpy() * kp_std + kp_mean)
            gts.append(batch["keypoints"].numpy() * kp_std + kp_mean)
            images.append(batch["image"][:, 0].numpy())
    return np.concatenate(preds), np.concatenate(gts), np.concatenate(images)


def calibrate_detector(detector=None, subset=1000):
    """``detectors.calibrate`` on the first ``subset`` training frames (default detector:
    ``HaarFaceDetector()``)."""
    ds = dataset("train", subset=subset)
    samples = ((s["image"], s["keypoints"])
               for s in (ds[i] for i in tqdm(range(len(ds)), desc="calibrating")))
    return calibrate(detector or HaarFaceDetector(), samples)


def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a keypoint model on the test split.")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--protocol", choices=["crop", "pipeline", "both"], default="both")
    p.add_argument("--split", choices=["test", "val", "train", "300w"], default="test",
                   help="val: the validation people of the model's training run (choose "
                        "settings there); 300w: the 300-W crops, faces no model here was "
                        "trained on unless trained with --extra-data 300w")
    p.add_argument("--subset", type=int, default=None, help="only N frames (fast check)")
    p.add_argument("--holdout", action="store_true",
                   help="with --split 300w: only its held-out part (data_300w.split_300w), the "
                        "faces a model trained with --extra-data 300w has not seen")
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--refine", type=int, default=1,
                   help="re-crops around the predicted keypoints (pipeline.FaceKeypointDetector)")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--calibrate", action="store_true",
                   help="measure the face detector's box -> crop rule on training frames and exit")
    args = p.parse_args(argv)
    if args.calibrate:
        print(json.dumps(calibrate_detector(subset=args.subset or 1000)))
        return 0
    if args.holdout and args.split != "300w":
        p.error("--holdout goes with --split 300w")
    detector = FaceKeypointDetector(args.model, flip_tta=args.flip_tta, refine=args.refine)
    names = split_300w_files()[1] if args.holdout else None
    results = {}
    for protocol in (["crop", "pipeline"] if args.protocol == "both" else [args.protocol]):
        summary, _ = evaluate(detector, args.split, protocol, args.subset, names=names)
        results[protocol] = summary
        print(format_metrics(summary, f"{PROTOCOL_TITLES[protocol]}  [{args.split} split, "
                                      f"{args.model}{', flip TTA' if args.flip_tta else ''}]"))
        print(f"  time            {summary['ms_per_image']:.1f} ms per image")
    if args.json:
        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
