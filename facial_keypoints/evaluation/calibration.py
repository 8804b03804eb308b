"""Measure the model's confidence as a probability: how likely a fit is good.

The network's raw confidence (the mean peak probability of its heatmaps, about 0.07 for a good
fit) ranks fits but reads as nothing. ``keypoints.confidence.probability`` maps it to the
probability that the fit is good (NME below 8 % of the distance between the outer eye corners,
the failure threshold of ``evaluation.metrics``) by a non-decreasing curve of its logarithm
(isotonic regression, the usual way to calibrate a score), fitted here on held-out faces of
each head's mark-up
(``training.ship.held_out_faces``: never a test set), two ways at once:

* as the pipeline finds them (``found_fits``): detected, each photo also turned by 30, 60, 90
  and 180 degrees (``ANGLES``); these fits are nearly all good;
* cut from wrong crops (``wrong_crop_fits``): shifted, scaled and turned wrongly as a
  detector's box or a roll estimate can be; most of these fail.

The curve travels in the checkpoint (``meta["confidence"][markup]["calibration"]``) with
the default ``min_confidence`` below which ``KeypointPipeline`` drops a detected face
(``choose_threshold``). ``training.ship`` measures them when a model is shipped.
"""
from __future__ import annotations

import numpy as np

from facial_keypoints.evaluation.evaluate import evaluate, rotated, split_dataset
from facial_keypoints.evaluation.metrics import FAIL_THRESHOLD, nme
from facial_keypoints.geometry import upright_square
from facial_keypoints.keypoints.confidence import RAW_FLOOR, probability

#: Each held-out photo is also turned by these angles (degrees, clockwise) for the fit.
ANGLES = (0, 30, -30, 60, -60, 90, -90, 180)


def fit_isotonic(x, y):
    """The non-decreasing step function of ``x`` closest to ``y`` (0/1) in least squares, by
    pooling adjacent violators: (the mean ``x`` of each step, its value), ready for
    ``np.interp``."""
    order = np.argsort(x, kind="stable")
    sums, counts, xsums = [], [], []
    for xi, yi in zip(np.asarray(x, dtype=np.float64)[order],
                      np.asarray(y, dtype=np.float64)[order]):
        sums.append(yi)
        counts.append(1.0)
        xsums.append(xi)
        while len(sums) > 1 and sums[-2] * counts[-1] >= sums[-1] * counts[-2]:
            s, c, xs = sums.pop(), counts.pop(), xsums.pop()
            sums[-1] += s
            counts[-1] += c
            xsums[-1] += xs
    counts = np.asarray(counts)
    return np.asarray(xsums) / counts, np.asarray(sums) / counts


def curve(x, good):
    """The calibration curve ({"log_raw", "probability"} knots) of log raw confidences ``x``
    and whether each fit was good."""
    knots, values = fit_isotonic(x, good)
    return {"log_raw": np.round(knots, 4).tolist(), "probability": np.round(values, 4).tolist()}


def found_fits(pipe, split, names=None, angles=ANGLES, markup=None):
    """Fits as the pipeline makes them: the raw confidence and NME of every held-out face it
    finds, each photo turned by each of ``angles`` (``min_confidence`` off: every fit counts);
    {"raw", "nme", "face"} arrays. A missed face is left out: it has no fit to judge."""
    raw, errors, index = [], [], []
    with pipe.using_min_confidence(0.0):
        for angle in angles:
            _, details = evaluate(pipe, split, "pipeline", names=names, degrees=angle,
                                  progress=False, markup=markup)
            found = np.isfinite(details["confidence"])
            raw.append(details["confidence"][found])
            errors.append(nme(details["pred"][found], details["gt"][found]))
            index.append(np.flatnonzero(found))
    return {"raw": np.concatenate(raw), "nme": np.concatenate(errors),
            "face": np.concatenate(index)}


def wrong_crop_fits(pipe, split, names=None, per_face=4, seed=0, markup=None):
    """Fits from wrong crops, the errors a detector or a roll estimate makes: each held-out
    face, turned by a quarter turn and up to 45 degrees more, cut ``per_face`` times from its
    square shifted by up to 30 % of its side, scaled 0.6-1.6 times and turned wrongly by up to
    90 degrees, then fitted as the pipeline fits a detection (``fit_squares``: refit, retry);
    {"raw", "nme", "face"} arrays."""
    rng = np.random.default_rng(seed)
    previous = pipe.markup
    pipe.set_markup(markup or pipe.markup)
    ds = split_dataset(split, pipe, names=names)
    raw, errors, index = [], [], []
    try:
        for i in range(len(ds)):
            sample = ds[i]
            for k in range(per_face):
                image, gt = rotated(sample["image"], sample["keypoints"],
                                    90 * k + rng.uniform(-45, 45))
                cx, cy, side, angle = upright_square(gt, pipe.crop_scale)
                crop = [cx + rng.uniform(-0.3, 0.3) * side, cy + rng.uniform(-0.3, 0.3) * side,
                        side * np.exp(rng.uniform(np.log(0.6), np.log(1.6))),
                        angle + rng.uniform(-90, 90)]
                pts, conf = pipe.fit_squares(image, [crop])
                raw.append(conf[0])
                errors.append(nme(pts, gt[None])[0])
                index.append(i)
    finally:
        pipe.set_markup(previous)
    return {"raw": np.asarray(raw), "nme": np.asarray(errors), "face": np.asarray(index)}


def calibrate(found, wrong, good_nme=FAIL_THRESHOLD):
    """The calibration fitted on both kinds of fits (``found_fits``, ``wrong_crop_fits``):
    {"log_raw", "probability", "good_nme", "faces", "fits", "min_confidence"}; and the reliability
    tables ({"faces as found", "wrong crops", "both"}: rows of ``reliability``) of the
    probabilities each fit gets from a curve fitted on the *other* half of the faces (split by
    face, so a face's copies stay on one side): an honest check of the curve that ships, which
    is fitted on all of them. The default ``min_confidence`` (``choose_threshold``) comes from
    the faces as found."""
    raw = np.r_[found["raw"], wrong["raw"]]
    x = np.log(np.maximum(raw, RAW_FLOOR))
    good = np.r_[found["nme"], wrong["nme"]] < good_nme
    kind = np.r_[np.zeros(len(found["raw"]), bool), np.ones(len(wrong["raw"]), bool)]
    half = np.r_[found["face"], wrong["face"]] % 2 == 0
    out_of_fold = np.empty(len(x))
    for train in (half, ~half):
        out_of_fold[~train] = probability(raw[~train], curve(x[train], good[train]))
    calibration = {**curve(x, good), "good_nme": good_nme,
                   "faces": int(len(np.unique(found["face"]))), "fits": int(len(x))}
    calibration["min_confidence"] = choose_threshold(probability(found["raw"], calibration))
    tables = {"faces as found": reliability(out_of_fold[~kind], good[~kind]),
              "wrong crops": reliability(out_of_fold[kind], good[kind]),
              "both": reliability(out_of_fold, good)}
    return calibration, tables


def choose_threshold(confidence):
    """The default ``min_confidence``: the lowest calibrated confidence of a held-out real face
    as the pipeline found it (any turn, good fit or not), rounded down to 0.01, so that the
    threshold drops none of them; false faces (a visor, a pattern) fall far below it."""
    return float(np.floor(np.min(confidence) * 100) / 100)


def reliability(confidence, good, edges=np.linspace(0, 1, 11)):
    """Rows of the reliability table: for the fits whose confidence falls in each bin, how
    many, their mean confidence and the share of them that are good (calibrated: the two
    agree)."""
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence >= lo) & ((confidence < hi) | (hi == edges[-1]))
        if inside.any():
            rows.append({"confidence": f"{lo:.1f}-{hi:.1f}", "fits": int(inside.sum()),
                         "mean confidence": round(float(confidence[inside].mean()), 3),
                         "share with a good fit": round(float(good[inside].mean()), 3)})
    return rows
