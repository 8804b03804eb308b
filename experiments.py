"""The experiments table of notebook 2: short real training runs, one factor changed at a time.

Starting from a baseline (the course Net, MSE loss, Adam, batch size 32), each row changes one
of loss, optimiser, batch size or number of epochs, trains with ``train.train`` on the same
frames and the same person split, and records the measured validation NME and wall time::

    python experiments.py                       # writes runs/experiments/experiments.csv
    python experiments.py --subset 1500 --epochs 6

Rows are real runs: nothing is copied or estimated. The runs are short (a subset of frames and
a few epochs) so that the whole grid fits a few minutes on two CPU cores; they rank the choices,
they do not give the final model's accuracy.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from train import TrainConfig, train


def grid(epochs):
    """(name, overrides) pairs: the baseline, then one factor changed per row."""
    return [
        ("baseline", {}),
        ("loss L1", {"loss": "l1"}),
        ("loss SmoothL1", {"loss": "smoothl1"}),
        ("optimiser SGD (momentum 0.9)", {"optimizer": "sgd", "lr": 0.01}),
        ("optimiser RMSprop", {"optimizer": "rmsprop", "lr": 1e-4}),
        ("batch size 16", {"batch_size": 16}),
        ("batch size 64", {"batch_size": 64}),
        (f"epochs x2 ({2 * epochs})", {"epochs": 2 * epochs}),
    ]


def run_experiments(base: TrainConfig, out_dir, rows=None, progress=False):
    """Train each configuration of ``rows`` (default ``grid(base.epochs)``); return a table."""
    out_dir = Path(out_dir)
    records = []
    for name, overrides in rows or grid(base.epochs):
        slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
        cfg = replace(base, **overrides, out=str(out_dir / slug))
        t0 = time.perf_counter()
        result = train(cfg, progress=progress)
        best = min(result["history"], key=lambda h: h["val_nme"])
        records.append({
            "experiment": name, "loss": cfg.loss, "optimizer": cfg.optimizer, "lr": cfg.lr,
            "batch_size": cfg.batch_size, "epochs": cfg.epochs,
            "best_epoch": best["epoch"],
            "val_nme_%": round(100 * best["val_nme"], 2),
            "final_train_loss": round(result["history"][-1]["train_loss"], 4),
            "minutes": round((time.perf_counter() - t0) / 60, 2),
        })
        if progress:
            print(records[-1], flush=True)
    table = pd.DataFrame(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "experiments.csv", index=False)
    return table


def base_config(subset=1500, epochs=5, input_size=96, seed=0, threads=None, val_subset=None):
    """The baseline: course Net on course transforms, MSE, Adam 1e-3, batch 32, no augmentation
    beyond the course's random crop."""
    return TrainConfig(arch="net", input_size=input_size, pipeline="course", loss="mse",
                       optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="none",
                       batch_size=32, epochs=epochs, augment=False, subset=subset,
                       val_subset=val_subset,
                       seed=seed, patience=10_000, workers=0, threads=threads,
                       command="experiments.py")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subset", type=int, default=1500, help="training frames per run")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--val-subset", type=int, default=None, help="validation frames per run")
    p.add_argument("--input-size", type=int, default=96)
    p.add_argument("--out", default="runs/experiments")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    base = base_config(args.subset, args.epochs, args.input_size, threads=args.threads,
                       val_subset=args.val_subset)
    table = run_experiments(base, args.out, progress=True)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
