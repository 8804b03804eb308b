"""Evaluate a keypoint model: the test protocols (the command is ``fkp-evaluate``,
``cli/evaluate.py``; in the course ``python evaluate.py``).

Two protocols on the official 770-frame test split::

    fkp-evaluate --model runs/mine/best.pt     # both protocols (default: the shipped model)
    fkp-evaluate --protocol crop      # (a) the model on face crops from the ground truth
    fkp-evaluate --protocol pipeline  # (b) detection -> crop -> model -> image
    fkp-evaluate --split val          # the model's own validation people
    fkp-evaluate --split 300w_test    # 300-W test photos (faces in the wild)
    fkp-evaluate --degrees 60         # every image turned by 60 degrees first
    fkp-evaluate --calibrate --detector blazeface   # measure its box -> crop rule

Protocol (b) is what a user gets: a face the detector misses is a failure. The metrics are in
``evaluation/metrics.py``.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from facial_keypoints.data.course import dataset, person_split
from facial_keypoints.data.fetch import W300_NAME, fetch_300w
from facial_keypoints.data.w300 import dataset_300w, split_300w_files
from facial_keypoints.detection.base import calibrate, crops_for
from facial_keypoints.evaluation.metrics import summarize
from facial_keypoints.geometry import CROP_SCALE, turn_image, upright_square
from facial_keypoints.landmarks import N_KEYPOINTS

PROTOCOL_TITLES = {"crop": "(a) model on ground-truth face crops",
                   "pipeline": "(b) full pipeline: detection -> crop -> model"}


def match_detection(crops, gt, crop_scale, size_factor=1.5):
    """Index of the detection whose crop covers the labelled face, or ``None``.

    ``crops``: (N, 4) squares (cx, cy, side, angle) made from the detections
    (``detection.base.crops_for``). One matches when its centre lies within a quarter of the face's
    size of the labelled face's upright square's centre and its side is within
    ``size_factor`` of that square's; the nearest such one is chosen.
    """
    crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
    if len(crops) == 0:
        return None
    gx, gy, gside, _ = upright_square(gt, crop_scale)
    d = np.linalg.norm(crops[:, :2] - [gx, gy], axis=1)
    ratio = crops[:, 2] / gside
    ok = (d < 0.25 * gside) & (1 / size_factor < ratio) & (ratio < size_factor)
    return int(np.argmin(np.where(ok, d, np.inf))) if ok.any() else None


def rotated(image, keypoints, degrees):
    """The image turned by ``degrees`` (clockwise on screen) about its centre, on a canvas
    grown so that nothing is cut (black corners), and the keypoints turned with it."""
    if degrees % 360 == 0:
        return image, np.asarray(keypoints, dtype=np.float64)
    out, m = turn_image(image, degrees)
    return out, np.asarray(keypoints, dtype=np.float64) @ m[:, :2].T + m[:, 2]


def split_dataset(split, pipe=None, subset=None, names=None):
    """The faces of a split: ``"test"`` (the course test split), ``"train"``, ``"val"`` (the
    people that the model's own training run held out, read from its checkpoint: where
    settings are chosen, never on the test split), ``"300w"`` (the 300-W training crops; the
    held-out fifth with ``names``), ``"300w_afw"`` and ``"300w_afw_photos"`` (AFW's faces, in
    crops and in their whole photos: training faces, for finding detector and roll problems),
    ``"300w_test"`` (300-W test photos: testing only).
    ``names`` restricts it to those files."""
    if split.startswith("300w"):
        name = W300_NAME if split == "300w" else split
        if fetch_300w(quiet=True, name=name) is None:
            raise FileNotFoundError(f"the 300-W crops are not in data/{name}: set "
                                    f"FKP_DATA_MIRROR to a mirror that has them")
        return dataset_300w(name=name, subset=subset, names=names)
    if split == "val":
        cfg = (pipe.meta.get("train_config") if pipe else None) or {}
        _, val_names = person_split(cfg)
        return dataset("train", subset=subset, names=names or val_names,
                       data_dir=cfg.get("data_dir"))
    return dataset(split, subset=subset, names=names)


def markup_for(split, pipe):
    """The mark-up a split is labelled in, where the pipeline's model has a head for it: the
    course's for the course splits, 300-W's for the 300-W ones (else the pipeline's own)."""
    markup = "300w" if split.startswith("300w") else "course"
    return markup if markup in pipe.markups else pipe.markup


def split_300w_of(pipe=None):
    """(training names, held-out names) of the 300-W training photos, as the model's run split
    them (its ``train_config``)."""
    cfg = (pipe.meta.get("train_config") if pipe else None) or {}
    return split_300w_files(cfg.get("data_dir"), cfg.get("holdout_fraction", 0.2),
                            cfg.get("holdout_seed", 0))


def holdout_names(pipe=None):
    """The held-out fifth of the 300-W training photos, as the model's run split them."""
    return split_300w_of(pipe)[1]


def evaluate(pipe, split="test", protocol="pipeline", subset=None, progress=True, names=None,
             degrees=0, markup=None):
    """Predictions for every face of a split under a protocol; returns (summary, details).

    ``split``: see ``split_dataset``. A model with one head per mark-up is read with the
    split's own: the course's for the course splits, 300-W's for the 300-W ones.
    ``protocol='crop'``: the model on the upright face square derived from the labelled
    keypoints. ``protocol='pipeline'``: every face of the image as ``find_faces`` finds it
    (detection -> crop -> model, a turned photo searched again upright), the labelled face
    matched by the square it was first cut from; a missed face is a failure, and so is a face
    the pipeline drops for a confidence below its ``min_confidence``.
    ``degrees``: each image (and its labels) turned by that much first (``rotated``).
    ``markup``: read another head than the split's own (to compare the heads on the same faces).
    ``details`` holds the predictions, labels, confidences and file names; the summary's
    ``ms_per_image`` is the time of detection (pipeline) and the model's passes per image, in
    this process, without reading the file.
    """
    ds = split_dataset(split, pipe, subset, names)
    previous = pipe.markup
    pipe.set_markup(markup or markup_for(split, pipe))
    preds, gts, confs, detections, seconds = [], [], [], 0, 0.0
    try:
        for i in tqdm(range(len(ds)), desc=f"{split} ({protocol})", disable=not progress or None):
            sample = ds[i]
            image, gt = rotated(sample["image"], sample["keypoints"], degrees)
            t0 = time.perf_counter()
            pred, conf = np.full((N_KEYPOINTS, 2), np.nan), np.nan
            if protocol == "crop":
                pts, c = pipe.keypoints_for_crops(image, [upright_square(gt, pipe.crop_scale)])
                pred, conf = pts[0], c[0]
            else:
                fits = pipe.image_fits(image)        # as ``find_faces`` finds them
                detections += len(fits)
                j = match_detection(fits.squares, gt, pipe.crop_scale)
                if j is not None and pipe.confident(pipe.calibrated(fits.raw[j])):
                    pred, conf = fits.keypoints[j], fits.raw[j]   # as the product keeps
            seconds += time.perf_counter() - t0
            preds.append(pred)
            gts.append(gt)
            confs.append(conf)
    finally:
        pipe.set_markup(previous)
    summary = summarize(np.array(preds), np.array(gts))
    summary["protocol"] = protocol
    summary["ms_per_image"] = 1000 * seconds / max(len(ds), 1)
    if protocol == "pipeline":
        summary["extra_detections"] = detections - summary["faces_found"]
    return summary, {"pred": np.array(preds), "gt": np.array(gts), "confidence": np.array(confs),
                     "files": ds.filenames}


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


def calibrate_detector(detector, subset=600):
    """``detection.base.calibrate`` on training faces: the first ``subset`` course training frames
    and as many 300-W training crops (their held-out fifth left out)."""
    course = dataset("train", subset=subset)
    train_300w, _ = split_300w_files()
    wild = dataset_300w(names=train_300w, subset=subset)
    samples = ((s["image"], s["keypoints"]) for ds in (course, wild)
               for s in (ds[i] for i in tqdm(range(len(ds)), desc=f"calibrating ({len(ds)})")))
    return calibrate(detector, samples)


def detection_rates(detector, samples, crop_scale=CROP_SCALE):
    """Share of labelled faces found and count of unmatched boxes, over (image, gt) pairs."""
    found = extra = total = 0
    seconds = 0.0
    for image, gt in samples:
        t0 = time.perf_counter()
        detections = detector(image)
        seconds += time.perf_counter() - t0
        total += 1
        hit = match_detection(crops_for(detections, detector, crop_scale), gt,
                              crop_scale) is not None
        found += hit
        extra += len(detections) - hit
    return {"found": found, "faces": total, "found_rate": found / max(total, 1),
            "extra_boxes": extra, "ms_per_image": 1000 * seconds / max(total, 1)}
