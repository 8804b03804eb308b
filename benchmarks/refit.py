"""Skipping the refit where the first square was right: what ``KeypointPipeline.refit_within``
saves and costs, on held-out faces (where its default ``REFIT_WITHIN`` was chosen).

    python -m benchmarks.refit               # results/refit.md

The pipeline fits each face in the square the detector's box gives, then again in the upright
square around those keypoints (``refine``). Where that square is nearly the first one, the
second pass sees nearly the same crop (a fit the model doubts is refitted all the same). On
the course validation people and the 300-W held-out
fifth (never a test set), through the pipeline, each face is fitted once and refitted once;
then for each setting the table gives the share of faces whose refit it skips and the NME with
it, beside refitting every face and never refitting, and picks the default by one rule
(``pick``): of the settings whose NME on each set is at most ``COST`` point above refitting
every face, the one that skips the most refits.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from tqdm import tqdm

from benchmarks.common import make_pipeline, shown, write_table
from facial_keypoints.detection.base import crops_for
from facial_keypoints.evaluation.evaluate import (
    holdout_names,
    markup_for,
    match_detection,
    split_dataset,
)
from facial_keypoints.evaluation.metrics import nme
from facial_keypoints.keypoints.pipeline import REFIT_WITHIN
from facial_keypoints.paths import DEFAULT_MODEL, RESULTS_DIR

#: The (share, degrees) settings of ``KeypointPipeline.refit_within`` that this tries.
REFIT_GRID = [(t, a) for t in (0.02, 0.03, 0.05, 0.08, 0.1, 0.12) for a in (2.0, 4.0, 6.0, 8.0)]
#: The most a skipped refit may cost, in points of NME on each set of held-out faces.
COST = 0.005
SETS = ("course val", "300-W held-out")


def refit_report(pipe):
    """On the held-out faces (course validation people, 300-W held-out fifth; never a test
    set), through the pipeline: each face's first fit from the detector's square and its refit
    from the upright square around that fit, then for each ``REFIT_GRID`` setting the share of
    faces that keep their first fit (``keeps_first_fit``: the square was right and the model
    does not doubt the fit; the refit skipped) and the NME with it, beside refitting
    every face (``None``) and never (``refine=0``)."""
    faces = {}
    for split, names in (("val", None), ("300w", holdout_names(pipe))):
        pipe.set_markup(markup_for(split, pipe))
        ds = split_dataset(split, pipe, names=names)
        rows = []
        for i in tqdm(range(len(ds)), desc=split, disable=None):
            sample = ds[i]
            image, gt = sample["image"], np.asarray(sample["keypoints"])
            found = pipe.detect(image)
            crops = crops_for(found, pipe.detector, pipe.crop_scale)
            j = match_detection(crops, gt, pipe.crop_scale)
            if j is None:
                continue
            first, conf = pipe.keypoints_for_crops(image, crops[j:j + 1])
            refit, _ = pipe.refit_keypoints(image, first)
            rows.append((crops[j], first[0], conf[0], float(nme(first, gt[None])[0]),
                         float(nme(refit, gt[None])[0])))
        faces[split] = rows
    pipe.set_markup(pipe.markups[-1] if "300w" in pipe.markups else pipe.markups[0])
    previous = pipe.refit_within
    table = []
    for setting in [None, *REFIT_GRID, "never"]:
        row = {"refit_within": "every face refitted" if setting is None else
               "no refit (refine 0)" if setting == "never" else f"{setting[0]}, {setting[1]:g}°"}
        for split, rows in faces.items():
            if setting == "never":
                right = np.ones(len(rows), dtype=bool)
            else:
                pipe.refit_within = setting
                right = np.array([pipe.keeps_first_fit(c[None], f[None], [k])[0]
                                  for c, f, k, _, _ in rows])
            errors = np.where(right, [r[3] for r in rows], [r[4] for r in rows])
            label = "course val" if split == "val" else "300-W held-out"
            row[f"{label}: refits skipped %"] = round(100 * right.mean(), 1)
            row[f"{label}: NME %"] = round(100 * errors.mean(), 3)
        table.append(row)
    pipe.refit_within = previous
    return table


def pick(table):
    """The row of ``refit_report``'s table that ``COST`` chooses: within ``COST`` point of
    refitting every face on each set, the most refits skipped (on average over the sets)."""
    every = table[0]
    fair = [row for row in table[1:] if all(
        row[f"{s}: NME %"] <= every[f"{s}: NME %"] + COST + 1e-9 for s in SETS)]
    return max(fair, key=lambda row: sum(row[f"{s}: refits skipped %"] for s in SETS))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--out", default=str(RESULTS_DIR), help="folder for the table")
    args = p.parse_args(argv)
    pipe = make_pipeline(args.model, "onnx")
    table = refit_report(pipe)
    picked = pick(table)["refit_within"]
    path = write_table(table, args.out, "refit",
                       f"Skipping the refit where the first square was right: held-out faces "
                       f"through the pipeline ({shown(args.model)}, onnxruntime, "
                       f"{pipe.model.precision}); the rule (at most {COST} point above "
                       f"refitting every face on each set, the most refits skipped) picks "
                       f"{picked}")
    print(f"picked: {picked} (the default: {REFIT_WITHIN})")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
