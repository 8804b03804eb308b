"""Each way of making the keypoint step faster, alone and together: what it saves and what it
costs in accuracy.

    python -m benchmarks.speedups              # results/speedups.md

The same model through the same pipeline (BlazeFace), set up each way: the float network or
its INT8 twin (``precision``), every face refitted or the refit skipped where the first square
was right (``refit_within``; also at its previous default), onnxruntime on one thread or on
every core (``threads``), and flip averaging (``flip_tta``, which costs). Speed: every course
test frame (decoded first, not timed) through every set-up in turn, frame by frame, so that
all of them meet the machine in the same state; per set-up the median time per frame of the
whole pipeline, and the median and mean of the keypoint step per face (every pass of the
network for the faces of the frame, with their crops: the mean counts the faces refitted).
Accuracy: the NME through the pipeline on the held-out faces (the course validation people,
the 300-W held-out fifth; the settings were chosen there) and on the test sets.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from tqdm import tqdm

from benchmarks.common import shown, write_table
from facial_keypoints.evaluation.evaluate import evaluate, holdout_names, split_dataset
from facial_keypoints.keypoints.pipeline import REFIT_WITHIN, KeypointPipeline
from facial_keypoints.paths import DEFAULT_MODEL, RESULTS_DIR

#: (name, KeypointPipeline arguments); the last is the default.
ONE = {"threads": 1}
SETUPS = [
    ("float, every face refitted, one thread", {"precision": "fp32", "refit_within": None, **ONE}),
    ("INT8 twin alone", {"precision": "int8", "refit_within": None, **ONE}),
    ("refit skipped where the square was right, alone", {"precision": "fp32", **ONE}),
    ("onnxruntime on every core, alone", {"precision": "fp32", "refit_within": None}),
    ("INT8 + refit skipped within (0.05, 4°), one thread (the previous default)",
     {"refit_within": (0.05, 4.0), **ONE}),
    ("all three + flip averaging", {"flip_tta": True}),
    ("all three (the default)", {}),
]

#: Where accuracy is measured: (column, split; "300w" is its held-out fifth).
SETS = [("course val", "val"), ("300-W held-out", "300w"), ("course test", "test"),
        ("300w_test", "300w_test")]


def timings(pipes, frames):
    """Per set-up: the pipeline's ms per frame (median over ``frames``) and the keypoint step's
    ms per face (median and mean over the frames with faces), every frame through every set-up
    in turn."""
    total = {name: [] for name in pipes}
    step = {name: [] for name in pipes}
    for image in tqdm(frames, desc="speed", disable=None):
        for name, pipe in pipes.items():
            t0 = time.perf_counter()
            found = pipe.detect(image)
            t1 = time.perf_counter()
            pts, _ = pipe.keypoints_for(image, found)
            t2 = time.perf_counter()
            total[name].append(1000 * (t2 - t0))
            if len(pts):
                step[name].append(1000 * (t2 - t1) / len(pts))
    return {name: (statistics.median(total[name]), statistics.median(step[name]),
                   statistics.fmean(step[name])) for name in pipes}


def accuracy(pipe, sets):
    """NME % through the pipeline, and faces found, on each of ``sets``."""
    out = {}
    for column, split in sets:
        names = holdout_names(pipe) if split == "300w" else None
        summary, _ = evaluate(pipe, split, "pipeline", names=names, progress=False)
        out[column] = (round(100 * summary["nme_mean"], 3),
                       f"{summary['faces_found']}/{summary['faces']}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--frames", type=int, default=None,
                   help="time on the first N course test frames (default: all 770)")
    p.add_argument("--out", default=str(RESULTS_DIR), help="folder for the table")
    args = p.parse_args(argv)
    pipes = {name: KeypointPipeline(args.model, **kwargs) for name, kwargs in SETUPS}
    test = split_dataset("test", subset=args.frames)
    frames = [test[i]["image"] for i in range(len(test))]
    for pipe in pipes.values():      # warm up
        for image in frames[:10]:
            pipe.keypoints_for(image, pipe.detect(image))
    speed = timings(pipes, frames)
    rows = []
    for name, pipe in pipes.items():
        row = {"set-up": name, "pipeline ms/frame (median)": round(speed[name][0], 2),
               "keypoint step ms/face (median)": round(speed[name][1], 2),
               "keypoint step ms/face (mean)": round(speed[name][2], 2)}
        for column, (error, found) in accuracy(pipe, SETS).items():
            row[f"{column} NME %"] = error
            row[f"{column} found"] = found
        rows.append(row)
        print(row, flush=True)
    path = write_table(rows, args.out, "speedups",
                       f"Speed-ups of the keypoint step, each alone and together "
                       f"({shown(args.model)}; {len(frames)} course test frames, each through "
                       f"every set-up in turn; refit skipped within {REFIT_WITHIN}; onnxruntime "
                       f"on every core: {os.cpu_count()}; NME through the pipeline)")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
