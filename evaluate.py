"""Honest metrics for facial keypoints, and the evaluation command.

NME (normalised mean error): the mean distance between predicted and true points divided by
the distance between the outer eye corners (points 36 and 45), per face. Reported as mean and
median, per region, as a cumulative error distribution (CED) with its area under the curve up
to 8 % (AUC@8 %) and the failure rate FR@8 % (share of faces whose NME exceeds 8 %, a face the
detector missed counting as a failure), and as RMSE in pixels.

Two protocols on the official 770-frame test split::

    python evaluate.py --model saved_models/keypoints_resnet18.pt            # both protocols
    python evaluate.py --protocol crop      # (a) the model on face crops from the ground truth
    python evaluate.py --protocol pipeline  # (b) Haar detection -> crop -> model -> image

Protocol (b) is what a user gets: a face the detector misses is a failure.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import data_load
from data_load import LEFT_EYE_OUTER, REGIONS, RIGHT_EYE_OUTER

FAIL_THRESHOLD = 0.08


def interocular(gt):
    """Outer-eye-corner distance per face, for (N, 68, 2) ground truth."""
    gt = np.asarray(gt, dtype=np.float64)
    return np.linalg.norm(gt[:, LEFT_EYE_OUTER] - gt[:, RIGHT_EYE_OUTER], axis=-1)


def point_errors(pred, gt):
    """Per-point error normalised by the outer-eye-corner distance: (N, 68)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and gt must both be (N, 68, 2), got {pred.shape} and {gt.shape}")
    return np.linalg.norm(pred - gt, axis=-1) / interocular(gt)[:, None]


def nme(pred, gt):
    """NME of each face: (N,). A face with a NaN prediction (missed) gets ``inf``."""
    e = point_errors(pred, gt).mean(axis=1)
    return np.where(np.isnan(e), np.inf, e)


def ced_auc(nmes, threshold=FAIL_THRESHOLD, steps=1000):
    """Area under the cumulative error distribution up to ``threshold``, scaled to [0, 1]."""
    nmes = np.asarray(nmes, dtype=np.float64)
    xs = np.linspace(0, threshold, steps + 1)
    ced = (nmes[None, :] <= xs[:, None]).mean(axis=1)
    return float(np.trapezoid(ced, xs) / threshold)


def failure_rate(nmes, threshold=FAIL_THRESHOLD):
    return float((np.asarray(nmes) > threshold).mean())


def summarize(pred, gt):
    """Every metric for predictions ``pred`` (N, 68, 2) against ``gt``, in image pixels.

    Rows of ``pred`` that are NaN are faces that were not found: they count as failures (NME
    ``inf``) and are left out of the mean, median, per-region NME and RMSE, which are over the
    faces found.
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    found = ~np.isnan(pred).any(axis=(1, 2))
    per_face = nme(pred, gt)
    errs = point_errors(pred[found], gt[found])
    sq = ((pred[found] - gt[found]) ** 2).sum(axis=-1)
    out = {
        "faces": int(len(gt)),
        "faces_found": int(found.sum()),
        "found_rate": float(found.mean()) if len(gt) else 0.0,
        "nme_mean": float(errs.mean()) if found.any() else float("nan"),
        "nme_median": float(np.median(errs.mean(axis=1))) if found.any() else float("nan"),
        "auc@8": ced_auc(per_face),
        "fr@8": failure_rate(per_face),
        "rmse_px": float(np.sqrt(sq.mean())) if found.any() else float("nan"),
    }
    for name, idx in REGIONS.items():
        out[f"nme_{name}"] = float(errs[:, list(idx)].mean()) if found.any() else float("nan")
    return out


def format_metrics(m, title=""):
    """A short human-readable block for one ``summarize`` result."""
    lines = [title] if title else []
    lines.append(f"  faces found     {m['faces_found']}/{m['faces']} ({100 * m['found_rate']:.1f} %)")
    lines.append(f"  NME mean        {100 * m['nme_mean']:.2f} %   median {100 * m['nme_median']:.2f} %")
    lines.append(f"  AUC@8 %         {m['auc@8']:.3f}      FR@8 % {100 * m['fr@8']:.2f} %")
    lines.append(f"  RMSE            {m['rmse_px']:.2f} px")
    lines.append("  per region NME  " + "  ".join(f"{k} {100 * m['nme_' + k]:.2f} %" for k in REGIONS))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------
def match_detection(boxes, gt, crop_scale, calibration=None, size_factor=1.5):
    """Index of the detected box that covers the labelled face, or ``None``.

    A box matches when the crop it gives is centred within a quarter of the face's size of the
    labelled face's centre and its size is within ``size_factor`` of the labelled crop's.
    """
    from data_load import keypoint_box, square_crop_box
    from detect import crop_for_box

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

    ``split``: ``"test"`` (the course test split), ``"train"``, ``"val"`` (the people
    ``train.py`` holds out with its default fraction and seed: where settings are chosen, never
    on the test split), or ``"300w"``: the 300-W crops,
    faces from outside the course dataset (in the wild, another mark-up convention). ``names``
    restricts it to those files.

    ``protocol='crop'``: the model on the face crop derived from the labelled keypoints.
    ``protocol='pipeline'``: detection -> crop -> model; a missed face is a failure.
    """
    from tqdm import tqdm

    from data_load import (dataset, dataset_300w, fetch_300w, keypoint_box, split_by_person,
                           square_crop_box)

    if split == "300w":
        if fetch_300w(quiet=True) is None:
            raise FileNotFoundError("the 300-W crops are not in data/300w_train: set "
                                    "FKP_DATA_MIRROR or convert them (python data_load.py "
                                    "--convert-300w)")
        ds = dataset_300w(subset=subset, names=names)
    elif split == "val":
        _, val_names = split_by_person(dataset("train").filenames, 0.1, 0)
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
            pred = (np.full((68, 2), np.nan) if j is None
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


def calibrate_detector(subset=1000, crop_scale=1.0):
    """Measure ``detect.FACE_BOX_TO_CROP`` on training frames: medians of where the labelled
    face sits relative to the Haar box that found it."""
    from tqdm import tqdm

    from data_load import dataset, keypoint_box
    from detect import HaarFaceDetector

    detector = HaarFaceDetector()
    ds = dataset("train", subset=subset)
    rows = []
    for i in tqdm(range(len(ds)), desc="calibrating"):
        sample = ds[i]
        kx, ky, kw, kh = keypoint_box(sample["keypoints"])
        kc, ksize = np.array([kx + kw / 2, ky + kh / 2]), max(kw, kh)
        boxes = detector(sample["image"])
        if len(boxes) == 0:
            continue
        centres = boxes[:, :2] + boxes[:, 2:] / 2
        j = int(np.argmin(np.linalg.norm(centres - kc, axis=1)))
        x, y, w, h = boxes[j]
        if np.linalg.norm(centres[j] - kc) > 0.5 * ksize:
            continue
        rows.append(((kc[0] - centres[j][0]) / w, (kc[1] - centres[j][1]) / h, ksize / w))
    rows = np.array(rows)
    med = np.median(rows, axis=0)
    spread = np.percentile(rows, [10, 90], axis=0)
    return {"dx": round(float(med[0]), 4), "dy": round(float(med[1]), 4),
            "size": round(float(med[2]), 4), "faces": len(rows), "of": len(ds),
            "p10": spread[0].round(4).tolist(), "p90": spread[1].round(4).tolist()}


def predict_loader(model, loader, kp_mean, kp_std):
    """Run ``model`` over a loader of normalised samples.

    Returns ``(pred, gt, images)``: keypoints (N, 68, 2) in the model input's pixels and the
    input images (N, H, W) in [0, 1].
    """
    import torch

    model.eval()
    preds, gts, images = [], [], []
    with torch.inference_mode():
        for batch in loader:
            out = model(batch["image"]).view(-1, 68, 2)
            preds.append(out.numpy() * kp_std + kp_mean)
            gts.append(batch["keypoints"].numpy() * kp_std + kp_mean)
            images.append(batch["image"][:, 0].numpy())
    return np.concatenate(preds), np.concatenate(gts), np.concatenate(images)


def consecutive_frame_pairs(filenames):
    """Pairs of file names ``<name>_X0`` / ``<name>_X1``: consecutive frames of one clip."""
    names = set(filenames)
    pairs = []
    for f in sorted(names):
        stem, ext = Path(f).stem, Path(f).suffix
        if stem.endswith("0") and f"{stem[:-1]}1{ext}" in names:
            pairs.append((f, f"{stem[:-1]}1{ext}"))
    return pairs


def label_noise(split="train", data_dir=None):
    """How much the labels of two nearly identical pictures differ: the error floor.

    For each pair of consecutive frames of a clip, frame A's keypoints are aligned onto frame
    B's by a similarity transform (rotation, scale, shift: the head may move a little) and the
    NME between them is measured. If both labels carry independent noise of the same size,
    the per-frame noise is this pair NME divided by sqrt(2). Returns the pair NMEs.
    """
    import cv2

    from data_load import dataset

    ds = dataset(split, data_dir=data_dir)
    index = {f: i for i, f in enumerate(ds.filenames)}
    pair_nme = []
    for a, b in consecutive_frame_pairs(ds.filenames):
        pa, pb = ds.keypoints(index[a]).astype(np.float64), ds.keypoints(index[b]).astype(np.float64)
        m, _ = cv2.estimateAffinePartial2D(pa, pb, method=cv2.LMEDS)
        if m is None:
            continue
        aligned = pa @ m[:, :2].T + m[:, 2]
        pair_nme.append(nme(aligned[None], pb[None])[0])
    return np.array(pair_nme)


#: Pictures without a face, bundled with scikit-image (no download): false-detection check.
FACE_FREE = ("coffee", "chelsea", "rocket", "coins", "moon", "page", "horse", "hubble_deep_field",
             "text", "grass", "gravel", "brick", "cell", "colorwheel", "logo", "microaneurysms",
             "retina", "immunohistochemistry", "clock", "binary_blobs", "checkerboard",
             "shepp_logan_phantom")


def face_free_images():
    """(name, RGB uint8 image) for each face-free picture, at 1x and rotated/resized variants."""
    import skimage.data

    from detect import as_rgb_array

    for name in FACE_FREE:
        image = as_rgb_array(getattr(skimage.data, name)())
        yield name, image
        yield name + " x2", np.ascontiguousarray(np.repeat(np.repeat(image, 2, 0), 2, 1))


def detection_rates(face_detector, samples, crop_scale=1.3):
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
    from detect import HaarFaceDetector

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
    from tqdm import tqdm

    sets = {"course test split": data_load.dataset("test", subset=subset)}
    if data_load.fetch_300w(quiet=True) is not None:
        sets["300-W crops (in the wild)"] = data_load.dataset_300w(subset=subset)
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


def measure_bias(detector, val_fraction=0.1, seed=0):
    """The model's mean offset of each keypoint (68, 2) in crop pixels on the validation people.

    Measured on ground-truth face crops of the people ``train.py`` held out (split by person,
    same seed), never on the test split: ``plain`` for the crop as it is, ``mirrored`` for the
    mirrored crop (its prediction, re-indexed, against the mirrored labels x -> size - 1 - x).
    The dataset's mark-up is not mirror-symmetric (a model trained with mirrored faces is off by
    about a pixel to one side on plain faces and to the other on mirrored ones, more on the jaw
    than on the eyes), hence one offset per keypoint. ``detect.FaceKeypointDetector`` subtracts
    these when the checkpoint carries them.
    """
    from data_load import crop_face, dataset, keypoint_box, split_by_person, square_crop_box

    full = dataset("train")
    _, val_names = split_by_person(full.filenames, val_fraction, seed)
    ds = dataset("train", names=val_names)
    size, plain, mirrored = detector.size, [], []
    for i in range(len(ds)):
        sample = ds[i]
        crop = square_crop_box(keypoint_box(sample["keypoints"]), detector.crop_scale)
        _, gt = crop_face(sample["image"], crop, size, sample["keypoints"])
        out, flip = detector.crop_predictions(sample["image"], [crop], mirrored=True)
        plain.append(out[0] - gt)
        mirrored.append(flip[0] - np.c_[size - 1 - gt[:, 0], gt[:, 1]])

    def per_point(offsets):
        return np.round(np.mean(offsets, axis=0), 3).tolist()

    return {"plain": per_point(plain), "mirrored": per_point(mirrored), "faces": len(ds),
            "split": f"train, validation people (fraction {val_fraction}, seed {seed})"}


def ship_model(model_path, dest, results, card_path=None, bias=None, settings=None,
               outside=None):
    """Copy a checkpoint to ``dest`` with its measured test metrics, and write its model card.

    ``results`` is ``{protocol: summarize(...) result}`` as measured by ``evaluate``. The copy is
    written atomically, so an interrupted run never leaves a half-written shipped model.
    """
    import os
    import platform
    import shutil

    import torch

    from models import atomic_torch_save, read_checkpoint

    ckpt = read_checkpoint(model_path)
    ckpt["metrics"] = {**ckpt.get("metrics", {}), "test": results,
                       "test_settings": dict(settings or {})}
    if outside:
        ckpt["metrics"]["300w_holdout"] = outside
    if bias is not None:
        ckpt["bias"] = {"plain": bias["plain"], "mirrored": bias["mirrored"]}
    atomic_torch_save(ckpt, dest)
    dest = Path(dest)
    run_dir = Path(ckpt.get("train_config", {}).get("out", ""))
    curves = None
    if run_dir.is_dir() and (run_dir / "curves.png").is_file():
        curves = dest.with_name(dest.stem + "_curves.png")
        shutil.copyfile(run_dir / "curves.png", curves)
        shutil.copyfile(run_dir / "log.csv", dest.with_name(dest.stem + "_log.csv"))
    card_path = Path(card_path or dest.with_name("MODEL_CARD.md"))
    train_metrics = ckpt["metrics"]
    rows = []
    for protocol, title in (("crop", "(a) ground-truth face crops"),
                            ("pipeline", "(b) full pipeline (Haar detection -> crop -> model)")):
        if protocol not in results:
            continue
        m = results[protocol]
        rows.append(f"| {title} | {m['faces_found']}/{m['faces']} | {100 * m['nme_mean']:.2f} | "
                    f"{100 * m['nme_median']:.2f} | {m['auc@8']:.3f} | {100 * m['fr@8']:.2f} | "
                    f"{m['rmse_px']:.2f} | " + " | ".join(f"{100 * m['nme_' + k]:.2f}" for k in REGIONS)
                    + " |")
    cfg = ckpt.get("train_config", {})
    text = f"""# Model card: `{dest.name}`

Written by `python evaluate.py --model {model_path} --ship {dest}`; every figure below was
measured by that command (`evaluate.py`) on the official 770-frame test split.

## The model
- Architecture: `{ckpt['arch']}` {ckpt.get('arch_args', {})} (`models.py`), {ckpt['input_size']}-px
  grayscale face crops, crop side = {ckpt.get('crop_scale')} x the keypoints' box (the detector maps
  a Haar box onto the same crop, `detect.FACE_BOX_TO_CROP`).
- Normalisation: {ckpt['normalization']}.
- Offsets subtracted from its predictions: one (x, y) per keypoint, measured by
  `evaluate.measure_bias` on the validation people (not the test split); averaged over the 68
  points (crop px): plain {_mean_offset(ckpt, 'plain')}, mirrored {_mean_offset(ckpt, 'mirrored')}.
- Test settings: {ckpt['metrics'].get('test_settings')} (`refine`: re-crops around the first
  prediction; `flip_tta`: mirrored prediction averaged in).
- File size: {dest.stat().st_size / 1e6:.1f} MB.

## Training
- Data: the course dataset (YouTube Faces frames), training split only: {cfg.get('val_fraction', 0.1):.0%}
  of the people held out for validation and early stopping (split by person){_extra_data(cfg)}. The
  test split was used for nothing but these figures.
- Command (as recorded in the checkpoint): `{ckpt.get('command', '?')}`{_init_history(cfg)}
- Best validation NME {100 * train_metrics.get('val_nme', float('nan')):.2f} % at epoch
  {train_metrics.get('epoch', '?')}, after {train_metrics.get('train_minutes', '?')} minutes of training.
- Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; torch {torch.__version__}.
{f'- Curves: `{curves.name}`, per-epoch log: `{dest.stem}_log.csv`.' if curves else ''}

## Test metrics (`evaluate.py`)
NME: mean point error / outer-eye-corner distance (points 36, 45). AUC and FR at 8 %. A face the
detector misses counts as a failure in FR and is left out of the NME means.

| protocol | faces found | NME mean % | NME median % | AUC@8 | FR@8 % | RMSE px | {' | '.join(k + ' %' for k in REGIONS)} |
| --- | --- | --- | --- | --- | --- | --- | {' | '.join('---' for _ in REGIONS)} |
{chr(10).join(rows)}

{_outside_rows(outside)}
Caveats: the test frames show the same 347 people as the training frames (other frames of
them). The labels themselves are noisy: consecutive frames of one clip differ by about 5 % NME
(median), about 3.5 % per frame (`evaluate.label_noise`, notebook 2).{_terms(cfg)}
"""
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(card_path)
    return dest, card_path


def _terms(cfg):
    if cfg.get("extra_data") != "300w":
        return ""
    return ("\n\nTerms: the 300-W annotations are licensed for non-commercial research use only; "
            "treat these weights the same way (as dlib does for its own 68-point model, trained "
            "on 300-W). The course data (YouTube Faces frames) is itself a research dataset. "
            "For weights without 300-W, train with the same commands minus `--extra-data 300w`.")


def _extra_data(cfg):
    if cfg.get("extra_data") == "300w":
        return (", plus the training part of the 300-W crops (`data_load.split_300w`: four "
                "fifths of the photos; the held-out fifth measures faces in the wild)")
    return ""


def _mean_offset(ckpt, kind):
    bias = (ckpt.get("bias") or {}).get(kind)
    return None if bias is None else np.round(np.mean(np.reshape(bias, (-1, 2)), axis=0), 3).tolist()


def _init_history(cfg):
    """For a fine-tuned model, the chain of runs its starting weights came from (read from
    those files while they exist), back to the run that trained from scratch."""
    from models import ModelLoadError, read_checkpoint

    lines, init, seen = [], cfg.get("init"), set()
    while init and init not in seen:
        seen.add(init)
        try:
            parent = read_checkpoint(init)
        except ModelLoadError:
            lines.append(f"- Fine-tuned from `{init}` (that file is not here to describe).")
            break
        m = parent.get("metrics", {})
        how = "fine-tuned in turn" if parent.get("train_config", {}).get("init") else \
            "trained from scratch"
        lines.append(f"- Its starting weights, `{init}`, were {how} by "
                     f"`{parent.get('command', '?')}` ({m.get('train_minutes', '?')} minutes, best "
                     f"validation NME {100 * m.get('val_nme', float('nan')):.2f} % at epoch "
                     f"{m.get('epoch', '?')}).")
        init = parent.get("train_config", {}).get("init")
    return "".join("\n" + line for line in lines)


def _outside_rows(outside):
    if not outside:
        return ""
    rows = [f"| {t} | {m['faces_found']}/{m['faces']} | {100 * m['nme_mean']:.2f} | "
            f"{100 * m['nme_median']:.2f} | {m['auc@8']:.3f} | {100 * m['fr@8']:.2f} |"
            for t, m in (("(a) ground-truth face crops", outside.get("crop")),
                         ("(b) full pipeline", outside.get("pipeline"))) if m]
    return ("\n## Faces from outside the course dataset\nThe held-out fifth of the 300-W crops "
            "(`python evaluate.py --split 300w --holdout`; in-the-wild photos, another mark-up "
            "convention for the nose and jaw):\n\n| protocol | faces found | NME mean % | "
            "NME median % | AUC@8 | FR@8 % |\n| --- | --- | --- | --- | --- | --- |\n"
            + "\n".join(rows) + "\n")


def main(argv=None):
    from detect import DEFAULT_MODEL, FaceKeypointDetector

    p = argparse.ArgumentParser(description="Evaluate a keypoint model on the test split.")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--protocol", choices=["crop", "pipeline", "both"], default="both")
    p.add_argument("--split", choices=["test", "val", "train", "300w"], default="test",
                   help="val: the validation people of train.py (choose settings there); "
                        "300w: the 300-W crops, faces no model here was trained on unless "
                        "trained with --extra-data 300w")
    p.add_argument("--subset", type=int, default=None, help="only N frames (fast check)")
    p.add_argument("--holdout", action="store_true",
                   help="with --split 300w: only its held-out part (data_load.split_300w), the "
                        "faces a model trained with --extra-data 300w has not seen")
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--refine", type=int, default=1,
                   help="re-crops around the predicted keypoints (detect.FaceKeypointDetector)")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--ship", metavar="DEST",
                   help="after measuring, copy the model to DEST with its metrics and write "
                        "MODEL_CARD.md beside it (needs --protocol both and the full test split)")
    p.add_argument("--detection", action="store_true",
                   help="compare face detectors: faces found on the test split and the 300-W "
                        "crops, false boxes on face-free pictures; then exit")
    p.add_argument("--calibrate", action="store_true",
                   help="measure detect.FACE_BOX_TO_CROP on training frames and exit")
    args = p.parse_args(argv)
    if args.calibrate:
        print(json.dumps(calibrate_detector(args.subset or 1000)))
        return 0
    if args.detection:
        import pandas as pd

        table = pd.DataFrame(detection_report(args.subset)).set_index("detector").T
        print(table.to_string())
        if args.json:
            table.to_json(args.json, indent=1)
        return 0
    if args.ship and (args.subset or args.split != "test" or args.protocol != "both"):
        p.error("--ship needs the full test split and both protocols")
    if args.holdout and args.split != "300w":
        p.error("--holdout goes with --split 300w")
    detector = FaceKeypointDetector(args.model, flip_tta=args.flip_tta, refine=args.refine)
    bias = None
    if args.ship:
        bias = measure_bias(detector)
        detector.bias = {k: np.asarray(bias[k]) for k in ("plain", "mirrored")}
        print(f"offsets of the 68 keypoints measured on {bias['faces']} validation faces, "
              f"averaged (crop px): plain {np.mean(bias['plain'], axis=0).round(3)}, mirrored "
              f"{np.mean(bias['mirrored'], axis=0).round(3)}; subtracted from now on")
    names = data_load.split_300w_files()[1] if args.holdout else None
    results = {}
    for protocol in (["crop", "pipeline"] if args.protocol == "both" else [args.protocol]):
        summary, _ = evaluate(detector, args.split, protocol, args.subset, names=names)
        results[protocol] = summary
        title = {"crop": "(a) model on ground-truth face crops",
                 "pipeline": "(b) full pipeline: Haar detection -> crop -> model"}[protocol]
        print(format_metrics(summary, f"{title}  [{args.split} split, {args.model}"
                             f"{', flip TTA' if args.flip_tta else ''}]"))
        print(f"  time            {summary['ms_per_image']:.1f} ms per image")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.ship:
        outside = None
        if data_load.fetch_300w(quiet=True) is not None:  # faces from outside the course data
            _, held = data_load.split_300w_files()
            outside = {protocol: evaluate(detector, "300w", protocol, names=held)[0]
                       for protocol in ("crop", "pipeline")}
            for protocol, m in outside.items():
                print(format_metrics(m, f"300-W held-out crops ({protocol})"))
        dest, card = ship_model(args.model, args.ship, results, bias=bias, outside=outside,
                                settings={"flip_tta": args.flip_tta, "refine": args.refine})
        print(f"shipped {dest} and {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
