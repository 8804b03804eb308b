"""The experiments table of notebook 2: short real training runs, one factor changed at a time.

Starting from a baseline (the course Net on notebook 1's face crops with augmentation, MSE
loss, Adam at 1e-3, batch size 32), each row changes one of the crops (the course's
transforms), the augmentation, the loss, the optimiser (SGD at its own usual learning rate),
the batch size, the number of epochs or a layer of the Net (batch-norm out, dropout in); a last
row trains the recipe notebook 2 used before (the course's transforms, no augmentation, dropout),
trains with ``train.train`` on the same frames and the same person split, once per seed, and
records the measured validation NME (mean and spread over the seeds) and wall time::

    python -m benchmarks.experiments            # writes runs/experiments/experiments.csv
    python -m benchmarks.experiments --subset 1500 --epochs 6 --seeds 0 1 2

Rows are real runs: nothing is copied or estimated. The runs are short (a subset of frames and
a few epochs) so that the whole grid fits a few minutes on two CPU cores; they rank the choices,
they do not give the final model's accuracy. The seeds show how much of a difference between
two rows is chance.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

import models  # noqa: F401  (registers the course's Net and its variants: --arch net...)
from facial_keypoints.files import atomic_path
from facial_keypoints.paths import RUNS_DIR
from facial_keypoints.training.config import TrainConfig
from facial_keypoints.training.train import train


def grid(epochs):
    """(name, overrides) pairs: the baseline, then one factor changed per row."""
    return [
        ("baseline", {}),
        ("course transforms, no augmentation", {"pipeline": "course", "augment": False}),
        ("no augmentation", {"augment": False}),
        ("loss L1", {"loss": "l1"}),
        # SGD's step is the gradient itself, not a step normalised per weight as Adam's and
        # RMSprop's: its usual learning rate is ten times theirs
        ("optimiser SGD (momentum 0.9, lr 0.01)", {"optimizer": "sgd", "lr": 1e-2}),
        ("optimiser RMSprop", {"optimizer": "rmsprop"}),
        ("batch size 16", {"batch_size": 16}),
        ("batch size 64", {"batch_size": 64}),
        (f"epochs x2 ({2 * epochs})", {"epochs": 2 * epochs}),
        ("no batch-norm", {"arch": "net-no-batchnorm"}),
        ("dropout in every block", {"arch": "net-dropout"}),
        # not one factor: the recipe notebook 2 used before, for a before/after at equal cost
        ("previous recipe: course transforms, no augmentation, dropout",
         {"pipeline": "course", "augment": False, "arch": "net-dropout"}),
    ]


def run_experiments(base: TrainConfig, out_dir, rows=None, seeds=(0,), progress=False):
    """Train each configuration of ``rows`` (default ``grid(base.epochs)``) once per seed;
    return a table with one row per configuration: the best validation NME's mean and standard
    deviation over the seeds, and each seed's."""
    out_dir = Path(out_dir)
    records = []
    for name, overrides in rows or grid(base.epochs):
        slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
        best_nmes, epochs_best, minutes = [], [], 0.0
        for seed in seeds:
            cfg = replace(base, **overrides, seed=seed, out=str(out_dir / slug / f"seed{seed}"))
            t0 = time.perf_counter()
            result = train(cfg, progress=progress)
            minutes += (time.perf_counter() - t0) / 60
            best = min(result["history"], key=lambda h: h["val_nme"])
            best_nmes.append(100 * best["val_nme"])
            epochs_best.append(best["epoch"])
        records.append({
            "experiment": name, "arch": cfg.arch, "crops": cfg.pipeline,
            "augment": cfg.augment, "loss": cfg.loss, "optimizer": cfg.optimizer, "lr": cfg.lr,
            "batch_size": cfg.batch_size, "epochs": cfg.epochs,
            "val_nme_%": round(float(np.mean(best_nmes)), 2),
            "spread_%": round(float(np.std(best_nmes)), 2),
            "per_seed_%": " / ".join(f"{v:.2f}" for v in best_nmes),
            "best_epoch": " / ".join(str(e) for e in epochs_best),
            "minutes": round(minutes, 2),
        })
        if progress:
            print(records[-1], flush=True)
    table = pd.DataFrame(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "experiments.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


def base_config(subset=1500, epochs=5, input_size=96, seed=0, threads=None, val_subset=None):
    """The baseline: the course Net on notebook 1's upright face crops with augmentation
    (``face_transform``), MSE, Adam 1e-3, batch 32, no learning-rate schedule."""
    return TrainConfig(arch="net", input_size=input_size, pipeline="face", augment=True,
                       loss="mse", optimizer="adam", lr=1e-3, weight_decay=0.0,
                       schedule="none", batch_size=32, epochs=epochs, subset=subset,
                       val_subset=val_subset, seed=seed, patience=10_000, workers=0,
                       threads=threads, command="python -m benchmarks.experiments")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subset", type=int, default=1500, help="training frames per run")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--val-subset", type=int, default=None, help="validation frames per run")
    p.add_argument("--input-size", type=int, default=96)
    p.add_argument("--out", default=str(RUNS_DIR / "experiments"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    base = base_config(args.subset, args.epochs, args.input_size, threads=args.threads,
                       val_subset=args.val_subset)
    table = run_experiments(base, args.out, seeds=args.seeds, progress=True)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
