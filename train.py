"""Train a keypoint model: one function, one command, for every model in ``models.py``.

Examples::

    # the course Net, course-style settings
    python train.py --arch net --input-size 224 --loss mse --optimizer adam --epochs 10

    # the shipped model (the exact command is in saved_models/MODEL_CARD.md)
    python train.py --arch resnet18 --width 32 --input-size 112 --loss l1 --epochs 120

The training split is divided by person (frames of one person are near-duplicates, so a split
by frame would leak) into train and validation. Each epoch logs train/val loss and val NME to
``<out>/log.csv`` and draws ``<out>/curves.png``; ``<out>/last.pt`` (resumable with
``--resume``) and ``<out>/best.pt`` (lowest val NME) are written atomically. Training stops
early when val NME has not improved for ``--patience`` epochs. The same seed gives the same
numbers on the CPU.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import data_load
from evaluate import nme
from models import (ModelLoadError, atomic_torch_save, build_model, checkpoint_meta,
                    count_parameters, load_model, load_weights, save_checkpoint)

ROOT = Path(__file__).resolve().parent
LOSSES = {"mse": nn.MSELoss, "l1": nn.L1Loss, "smoothl1": nn.SmoothL1Loss}
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}
SCHEDULES = ("none", "cosine", "step", "plateau")


@dataclass
class TrainConfig:
    arch: str = "resnet18"
    width: int = 32                 # resnet18 only
    input_size: int = 112
    pipeline: str = "face"          # "face": face crops (+ augmentation); "course": course transforms
    crop_scale: float = 1.3
    loss: str = "l1"
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    batch_size: int = 32
    epochs: int = 30
    augment: bool = True
    degrees: float = 25.0
    flip: float = 0.5               # mirror probability (left/right indices swapped)
    degrade: float = 0.0            # probability of each of blur, noise, occlusion
    jitter_scale: float = 0.1       # face-crop size jitter (fraction)
    jitter_shift: float = 0.06      # face-crop centre jitter (fraction of the side)
    init: str | None = None         # start from this checkpoint's weights (fine-tuning)
    extra_data: str = ""            # "300w": add the 300-W crops' training part (split_300w)
    seed: int = 0
    val_fraction: float = 0.1
    patience: int = 20
    subset: int | None = None       # a small deterministic subset of training frames
    val_subset: int | None = None
    out: str = "runs/default"
    data_dir: str | None = None
    threads: int | None = None
    workers: int = 1
    max_minutes: float | None = None  # stop (cleanly, resumable) after this much training time
    command: str = ""
    extra: dict = field(default_factory=dict)

    def arch_args(self):
        if self.arch == "resnet18":
            return {"width": self.width}
        if self.arch == "heatmap":
            return {"width": self.width, "input_size": self.input_size}
        if self.arch == "net":
            return {"input_size": self.input_size}
        return {}

    @property
    def kp_mean(self):
        return self.input_size / 2

    @property
    def kp_std(self):
        return self.input_size / 4


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loaders(cfg: TrainConfig):
    """Train and validation loaders, split by person."""
    full = data_load.dataset("train", data_dir=cfg.data_dir)
    train_names, val_names = data_load.split_by_person(full.filenames, cfg.val_fraction, cfg.seed)
    if cfg.pipeline == "course":
        tf_train = data_load.course_transform(cfg.input_size, cfg.kp_mean, cfg.kp_std, train=True)
        tf_val = data_load.course_transform(cfg.input_size, cfg.kp_mean, cfg.kp_std, train=False)
    else:
        tf_train = data_load.face_transform(cfg.input_size, cfg.crop_scale, cfg.kp_mean,
                                            cfg.kp_std, augment=cfg.augment, degrees=cfg.degrees,
                                            jitter_scale=cfg.jitter_scale,
                                            jitter_shift=cfg.jitter_shift, flip=cfg.flip,
                                            degrade=cfg.degrade)
        tf_val = data_load.face_transform(cfg.input_size, cfg.crop_scale, cfg.kp_mean, cfg.kp_std)
    train_ds = data_load.dataset("train", tf_train, cfg.data_dir, names=train_names,
                                 subset=cfg.subset, seed=cfg.seed)
    if cfg.extra_data == "300w":
        train_ds = torch.utils.data.ConcatDataset([train_ds, extra_300w(cfg, tf_train)])
    elif cfg.extra_data:
        raise ValueError(f"--extra-data must be '300w' or empty, got {cfg.extra_data!r}")
    val_ds = data_load.dataset("train", tf_val, cfg.data_dir, names=val_names,
                               subset=cfg.val_subset, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    common = dict(num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
                  worker_init_fn=_worker_init)
    train_dl = DataLoader(train_ds, cfg.batch_size, shuffle=True, drop_last=len(train_ds) > cfg.batch_size,
                          generator=gen, **common)
    val_dl = DataLoader(val_ds, 64, shuffle=False, **common)
    return train_dl, val_dl


def extra_300w(cfg, transform):
    """The training part of the 300-W crops (``data_load.split_300w``; the held-out part is
    for ``evaluate.py --split 300w --holdout``), through the same transform."""
    folder = data_load.fetch_300w(cfg.data_dir, quiet=True)
    if folder is None:
        raise data_load.DataError("--extra-data 300w needs data/300w_train: set "
                                  f"${data_load.MIRROR_ENV} or convert 300-W with "
                                  "`python data_load.py --convert-300w`")
    train_names, _ = data_load.split_300w_files(cfg.data_dir)
    return data_load.dataset_300w(transform, cfg.data_dir, names=train_names)


def _worker_init(worker_id):
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def run_epoch(model, loader, criterion, optimizer=None, desc="", kp_std=1.0, progress=True,
              heatmap_weight=0.01):
    """One pass over ``loader``; trains when an optimizer is given. Returns (loss, NME).

    A heatmap model (``models.HeatmapKeypoints``) is trained on its decoded coordinates and,
    with ``heatmap_weight``, on Gaussian heatmap targets.
    """
    training = optimizer is not None
    model.train(training)
    total, count, nmes = 0.0, 0, []
    bar = tqdm(loader, desc=desc, leave=False, unit="batch", mininterval=2, disable=not progress)
    with torch.set_grad_enabled(training):
        for batch in bar:
            images = batch["image"]
            targets = batch["keypoints"].flatten(1)
            if hasattr(model, "forward_heatmaps"):  # heatmap model: coordinate + heatmap loss
                logits, outputs = model.forward_heatmaps(images)
                loss = criterion(outputs, targets) + heatmap_weight * model.heatmap_loss(logits, targets)
            else:
                outputs = model(images)
                loss = criterion(outputs, targets)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total += loss.item() * len(images)
            count += len(images)
            nmes.append(nme(outputs.detach().view(-1, 68, 2).numpy() * kp_std,
                            batch["keypoints"].numpy() * kp_std))
            bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1), float(np.concatenate(nmes).mean()) if nmes else float("nan")


def make_scheduler(cfg, optimizer):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(cfg.epochs // 3, 1),
                                               gamma=0.1)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
    return None


def plot_curves(history, path):
    """Train/val loss and val NME per epoch, saved as a PNG (no global matplotlib state, so a
    notebook's inline figures keep working)."""
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 3.5))
    a, b = fig.subplots(1, 2)
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    a.plot(epochs, [h["val_loss"] for h in history], label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.set_yscale("log"), a.legend()
    b.plot(epochs, [100 * h["val_nme"] for h in history], color="C2")
    b.set_xlabel("epoch"), b.set_ylabel("validation NME (%)")
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def write_log(history, path):
    tmp = Path(path).with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def train(cfg: TrainConfig, resume=False, progress=True):
    """Train a model as ``cfg`` says. Returns a dict with the best val NME, epochs and paths."""
    if cfg.loss not in LOSSES or cfg.optimizer not in OPTIMIZERS or cfg.schedule not in SCHEDULES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, optimizer one of "
                         f"{sorted(OPTIMIZERS)}, schedule one of {SCHEDULES}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.pt"
    seed_everything(cfg.seed)
    train_dl, val_dl = make_loaders(cfg)
    model = build_model(cfg.arch, **cfg.arch_args())
    if cfg.init and not (resume and last_path.is_file()):
        init_from(model, cfg)
    criterion = LOSSES[cfg.loss]()
    opt_args = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "sgd":
        opt_args["momentum"] = 0.9
    optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), **opt_args)
    scheduler = make_scheduler(cfg, optimizer)

    history, best_nme, start_epoch, elapsed = [], math.inf, 1, 0.0
    if resume and last_path.is_file():
        try:
            state = torch.load(last_path, map_location="cpu", weights_only=False)
            missing = [k for k in ("model", "optimizer", "epoch", "history", "best_nme")
                       if k not in state]
            if missing:
                raise KeyError(f"no {', '.join(missing)}")
        except Exception as e:  # torch raises many kinds for a damaged file
            first = (str(e).splitlines() or [""])[0]
            raise ModelLoadError(f"{last_path}: not a readable training checkpoint "
                                 f"({type(e).__name__}: {first[:200]}). Delete it to start "
                                 f"afresh, or resume from a copy of the run folder.") from None
        load_weights(model, state["model"], last_path)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        history, best_nme = state["history"], state["best_nme"]
        start_epoch, elapsed = state["epoch"] + 1, state.get("elapsed", 0.0)
        torch.set_rng_state(state["rng_torch"])
        train_dl.generator.set_state(state["rng_loader"])
        np.random.set_state(state["rng_numpy"])
        if progress:
            print(f"resumed from {last_path} at epoch {start_epoch}")

    command = cfg.command or f"train.train({cfg!r})"
    meta = checkpoint_meta(cfg.arch, cfg.arch_args(), cfg.input_size, cfg.crop_scale,
                           cfg.kp_mean, cfg.kp_std, command=command,
                           pipeline=cfg.pipeline, train_config=asdict(cfg))
    if progress:
        print(f"{cfg.arch} {cfg.arch_args()}: {count_parameters(model):,} parameters; "
              f"{len(train_dl.dataset)} train / {len(val_dl.dataset)} val frames "
              f"(split by person)")
    since_best = 0
    if history:
        best_epoch = min(history, key=lambda h: h["val_nme"])["epoch"]
        since_best = history[-1]["epoch"] - best_epoch
    stopped = "epochs"
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_loss, train_nme = run_epoch(model, train_dl, criterion, optimizer,
                                          desc=f"epoch {epoch}/{cfg.epochs}", kp_std=cfg.kp_std,
                                          progress=progress)
        val_loss, val_nme = run_epoch(model, val_dl, criterion, desc="validation",
                                      kp_std=cfg.kp_std, progress=progress)
        lr = optimizer.param_groups[0]["lr"]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_nme)
        elif scheduler is not None:
            scheduler.step()
        elapsed += time.perf_counter() - t0
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                        "train_nme": train_nme, "val_nme": val_nme, "lr": lr,
                        "minutes": round(elapsed / 60, 3)})
        improved = val_nme < best_nme
        if improved:
            best_nme, since_best = val_nme, 0
            save_checkpoint(best_path, model, {**meta, "metrics": {
                "val_nme": val_nme, "epoch": epoch, "train_minutes": round(elapsed / 60, 2)}})
        else:
            since_best += 1
        atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict() if scheduler else None,
                           "epoch": epoch, "history": history, "best_nme": best_nme,
                           "elapsed": elapsed, "rng_torch": torch.get_rng_state(),
                           "rng_loader": train_dl.generator.get_state(),
                           "rng_numpy": np.random.get_state(), "config": asdict(cfg)},
                          last_path)
        write_log(history, out / "log.csv")
        plot_curves(history, out / "curves.png")
        if progress:
            print(f"epoch {epoch:3d}  train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
                  f"val NME {100 * val_nme:.2f} %{'  *' if improved else ''}  "
                  f"({elapsed / 60:.1f} min)", flush=True)
        if not improved and since_best >= cfg.patience:
            stopped = f"early stop: no val NME gain in {cfg.patience} epochs"
            break
        if cfg.max_minutes is not None and elapsed / 60 >= cfg.max_minutes:
            stopped = f"time budget of {cfg.max_minutes} min reached (resume with --resume)"
            break
    if progress:
        print(f"done ({stopped}); best val NME {100 * best_nme:.2f} % -> {best_path}")
    return {"best_val_nme": best_nme, "epochs": len(history), "minutes": elapsed / 60,
            "best": str(best_path), "last": str(last_path), "history": history,
            "stopped": stopped}


def init_from(model, cfg: TrainConfig):
    """Load the weights of checkpoint ``cfg.init`` into ``model`` (fine-tuning); the checkpoint
    must describe the same architecture, arguments and input size."""
    init_model, init_meta = load_model(cfg.init, expect_arch=cfg.arch)
    if init_meta.get("arch_args") != cfg.arch_args() or init_meta["input_size"] != cfg.input_size:
        raise ModelLoadError(f"{cfg.init}: a {init_meta['arch']} {init_meta.get('arch_args')} "
                             f"model for {init_meta['input_size']}-px input; this run trains "
                             f"{cfg.arch} {cfg.arch_args()} at {cfg.input_size} px. Pass the "
                             f"same --arch/--width/--input-size, or leave out --init.")
    load_weights(model, init_model.state_dict(), cfg.init)


def parse_args(argv=None):
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default=d.arch, choices=["net", "resnet18", "heatmap"])
    p.add_argument("--width", type=int, default=d.width,
                   help="resnet18 / heatmap encoder channel width (64: torchvision's resnet18)")
    p.add_argument("--input-size", type=int, default=d.input_size)
    p.add_argument("--pipeline", default=d.pipeline, choices=["face", "course"],
                   help="face crops with augmentation, or the course transforms")
    p.add_argument("--crop-scale", type=float, default=d.crop_scale,
                   help="face crop side / larger side of the keypoints' box")
    p.add_argument("--loss", default=d.loss, choices=sorted(LOSSES))
    p.add_argument("--optimizer", default=d.optimizer, choices=sorted(OPTIMIZERS))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", default=d.schedule, choices=SCHEDULES)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--degrees", type=float, default=d.degrees, help="max rotation")
    p.add_argument("--flip", type=float, default=d.flip, help="mirror probability")
    p.add_argument("--degrade", type=float, default=d.degrade,
                   help="probability of each of blur, noise and an occluding patch")
    p.add_argument("--jitter-scale", type=float, default=d.jitter_scale,
                   help="face-crop size jitter (fraction), as from an imprecise face detector")
    p.add_argument("--jitter-shift", type=float, default=d.jitter_shift,
                   help="face-crop centre jitter (fraction of the crop side)")
    p.add_argument("--init", default=None,
                   help="start from the weights of this checkpoint (fine-tuning)")
    p.add_argument("--extra-data", default="", choices=["", "300w"],
                   help="also train on the training part of the 300-W crops")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--subset", type=int, default=None, help="use only N training frames")
    p.add_argument("--val-subset", type=int, default=None)
    p.add_argument("--out", default=d.out, help="run folder for log, curves, checkpoints")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=d.workers, help="data loader processes")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    args = p.parse_args(argv)
    resume = args.__dict__.pop("resume")
    cfg = TrainConfig(**vars(args))
    cfg.command = "python train.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    return cfg, resume


def _one_line(error) -> str:
    """The message of an error; for one re-raised from a data loader worker, which carries the
    worker's traceback in its text, only the original message."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(type(error).__module__) else last
    return text


def main(argv=None):
    cfg, resume = parse_args(argv)
    try:
        data_load.fetch_dataset(cfg.data_dir, quiet=True)
        train(cfg, resume=resume)
    except (data_load.DataError, data_load.ImageReadError, ModelLoadError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        if not isinstance(e, ModelLoadError) and Path(cfg.out, "last.pt").is_file():
            print(f"(the last finished epoch is in {Path(cfg.out, 'last.pt')}; once this is "
                  f"fixed, add --resume to continue from it)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
