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
import random
import shlex
import sys
import time
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from matplotlib.figure import Figure
from torch.utils.data import DataLoader
from tqdm import tqdm

import data_300w
import data_load
import fetch_data
from data_load import CROP_SCALE, DataError
from images import ImageReadError
from landmarks import N_KEYPOINTS
from metrics import nme
from models import (
    ARCHITECTURES,
    ModelLoadError,
    build_model,
    checkpoint_meta,
    count_parameters,
    load_model,
    load_weights,
    save_checkpoint,
)
from utils import atomic_path, atomic_torch_save, first_line, one_line

ROOT = Path(__file__).resolve().parent
LOSSES = {"mse": nn.MSELoss, "l1": nn.L1Loss, "smoothl1": nn.SmoothL1Loss}
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}
SCHEDULES = ("none", "cosine", "step", "plateau")


def option(default, help, **kw):
    """A training setting: its default, its ``--help`` text and (``choices=...``) its values."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Every setting of a training run: the one declaration that the command line is built
    from (``build_parser``) and that each checkpoint stores (``train_config``)."""
    # the model
    arch: str = option("resnet18", "model architecture (models.py)", choices=tuple(ARCHITECTURES))
    width: int = option(32, "resnet18 / heatmap encoder channel width (64: torchvision's resnet18)")
    input_size: int = option(112, "side of the square model input, in pixels")
    heatmap_weight: float = option(0.01, "heatmap model: weight of the heatmap loss beside the "
                                         "coordinate loss")
    # the data
    pipeline: str = option("face", "face crops with augmentation, or the course transforms",
                           choices=("face", "course"))
    crop_scale: float = option(CROP_SCALE, "face crop side / larger side of the keypoints' box")
    extra_data: str = option("", "also train on the training part of the 300-W crops",
                             choices=("", "300w"))
    val_fraction: float = option(0.1, "share of the people held out for validation")
    subset: int | None = option(None, "use only N training frames")
    val_subset: int | None = option(None, "use only N validation frames")
    data_dir: str | None = option(None, "the dataset's folder (default: data/)")
    # augmentation
    augment: bool = option(True, "augment the training crops (--no-augment: none)")
    degrees: float = option(25.0, "max rotation")
    flip: float = option(0.5, "mirror probability (left/right indices swapped)")
    degrade: float = option(0.0, "probability of each of blur, noise and an occluding patch")
    jitter_scale: float = option(0.1, "face-crop size jitter (fraction), as from an imprecise "
                                      "face detector")
    jitter_shift: float = option(0.06, "face-crop centre jitter (fraction of the crop side)")
    color_jitter: float = option(0.4, "brightness and contrast jitter")
    # optimisation
    loss: str = option("l1", "coordinate loss", choices=tuple(LOSSES))
    optimizer: str = option("adam", "optimiser", choices=tuple(OPTIMIZERS))
    lr: float = option(1e-3, "learning rate")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(1e-4, "weight decay")
    schedule: str = option("cosine", "learning-rate schedule", choices=SCHEDULES)
    step_every: int | None = option(None, "step schedule: epochs between decays (default: a "
                                          "third of the epochs)")
    step_gamma: float = option(0.1, "step schedule: decay factor")
    plateau_factor: float = option(0.5, "plateau schedule: decay factor")
    plateau_patience: int = option(3, "plateau schedule: epochs without gain before a decay")
    batch_size: int = option(32, "training batch size")
    val_batch_size: int = option(64, "validation batch size")
    epochs: int = option(30, "number of epochs")
    patience: int = option(20, "stop early after this many epochs without a validation gain")
    max_minutes: float | None = option(None, "stop (cleanly, resumable) after this much "
                                             "training time")
    init: str | None = option(None, "start from the weights of this checkpoint (fine-tuning)")
    seed: int = option(0, "random seed (also of the split by person)")
    # the run
    out: str = option("runs/default", "run folder for log, curves, checkpoints")
    threads: int | None = option(None, "torch CPU threads")
    workers: int = option(1, "data loader processes")
    command: str = option("", "the command that started the run (recorded, not an option)")

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

    def check(self):
        """Raise ``ValueError`` naming the option when a setting has no allowed value."""
        for f in fields(self):
            allowed = f.metadata.get("choices")
            if allowed is not None and getattr(self, f.name) not in allowed:
                raise ValueError(f"--{f.name.replace('_', '-')} must be one of {allowed}, got "
                                 f"{getattr(self, f.name)!r}")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loaders(cfg: TrainConfig):
    """Train and validation loaders, split by person."""
    cfg.check()
    train_names, val_names = data_load.person_split(asdict(cfg))
    if cfg.pipeline == "course":
        tf_train = data_load.course_transform(cfg.input_size, cfg.kp_mean, cfg.kp_std, train=True)
        tf_val = data_load.course_transform(cfg.input_size, cfg.kp_mean, cfg.kp_std, train=False)
    else:
        tf_train = data_load.face_transform(cfg.input_size, cfg.crop_scale, cfg.kp_mean,
                                            cfg.kp_std, augment=cfg.augment, degrees=cfg.degrees,
                                            jitter_scale=cfg.jitter_scale,
                                            jitter_shift=cfg.jitter_shift, flip=cfg.flip,
                                            degrade=cfg.degrade, color_jitter=cfg.color_jitter)
        tf_val = data_load.face_transform(cfg.input_size, cfg.crop_scale, cfg.kp_mean, cfg.kp_std)
    train_ds = data_load.dataset("train", tf_train, cfg.data_dir, names=train_names,
                                 subset=cfg.subset, seed=cfg.seed)
    if cfg.extra_data == "300w":
        train_ds = torch.utils.data.ConcatDataset([train_ds, extra_300w(cfg, tf_train)])
    val_ds = data_load.dataset("train", tf_val, cfg.data_dir, names=val_names,
                               subset=cfg.val_subset, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    common = dict(num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
                  worker_init_fn=_worker_init)
    train_dl = DataLoader(train_ds, cfg.batch_size, shuffle=True,
                          drop_last=len(train_ds) > cfg.batch_size, generator=gen, **common)
    val_dl = DataLoader(val_ds, cfg.val_batch_size, shuffle=False, **common)
    return train_dl, val_dl


def extra_300w(cfg, transform):
    """The training part of the 300-W crops (``data_300w.split_300w``; the held-out part is
    for ``evaluate.py --split 300w --holdout``), through the same transform."""
    if fetch_data.fetch_300w(cfg.data_dir, quiet=True) is None:
        raise DataError("--extra-data 300w needs data/300w_train: set "
                        f"${fetch_data.MIRROR_ENV} or convert 300-W with `python data_300w.py`")
    train_names, _ = data_300w.split_300w_files(cfg.data_dir)
    return data_300w.dataset_300w(transform, cfg.data_dir, names=train_names)


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
                loss = criterion(outputs, targets) + \
                    heatmap_weight * model.heatmap_loss(logits, targets)
            else:
                outputs = model(images)
                loss = criterion(outputs, targets)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total += loss.item() * len(images)
            count += len(images)
            nmes.append(nme(outputs.detach().view(-1, N_KEYPOINTS, 2).numpy() * kp_std,
                            batch["keypoints"].numpy() * kp_std))
            bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1), float(np.concatenate(nmes).mean()) if nmes else float("nan")


def make_optimizer(cfg, model):
    args = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "sgd":
        args["momentum"] = cfg.momentum
    return OPTIMIZERS[cfg.optimizer](model.parameters(), **args)


def make_scheduler(cfg, optimizer):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    if cfg.schedule == "step":
        step = cfg.step_every or max(cfg.epochs // 3, 1)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=cfg.step_gamma)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience)
    return None


def plot_curves(history, path):
    """Train/val loss and val NME per epoch, saved as a PNG (no global matplotlib state, so a
    notebook's inline figures keep working)."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 3.5))
    a, b = fig.subplots(1, 2)
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    a.plot(epochs, [h["val_loss"] for h in history], label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.set_yscale("log"), a.legend()
    b.plot(epochs, [100 * h["val_nme"] for h in history], color="C2")
    b.set_xlabel("epoch"), b.set_ylabel("validation NME (%)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def write_log(history, path):
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def load_training_state(path):
    """The state ``train`` writes to ``RUN/last.pt`` after every epoch, checked."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        missing = [k for k in ("model", "optimizer", "epoch", "history", "best_nme")
                   if k not in state]
        if missing:
            raise KeyError(f"no {', '.join(missing)}")
    except Exception as e:  # torch raises many kinds for a damaged file
        raise ModelLoadError(f"{path}: not a readable training checkpoint "
                             f"({type(e).__name__}: {first_line(e)}). Delete it to start "
                             f"afresh, or resume from a copy of the run folder.") from None
    return state


def train(cfg: TrainConfig, resume=False, progress=True):
    """Train a model as ``cfg`` says. Returns a dict with the best val NME, epochs and paths."""
    cfg.check()
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
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)

    history, best_nme, start_epoch, elapsed = [], math.inf, 1, 0.0
    if resume and last_path.is_file():
        state = load_training_state(last_path)
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
                                          progress=progress, heatmap_weight=cfg.heatmap_weight)
        val_loss, val_nme = run_epoch(model, val_dl, criterion, desc="validation",
                                      kp_std=cfg.kp_std, progress=progress,
                                      heatmap_weight=cfg.heatmap_weight)
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


def build_parser():
    """The command line, built from ``TrainConfig``: one option per field (``--no-X`` for a
    setting that is on by default), plus ``--resume``."""
    hints = typing.get_type_hints(TrainConfig)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(TrainConfig):
        if f.name == "command":
            continue
        kind = hints[f.name]
        kind = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                           help=f.metadata["help"])
        else:
            p.add_argument(flag, type=kind, default=f.default, help=f.metadata["help"],
                           choices=f.metadata.get("choices"))
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    return p


def parse_args(argv=None):
    """``(TrainConfig, resume)`` from the command line; the config records the command."""
    args = build_parser().parse_args(argv)
    resume = args.__dict__.pop("resume")
    cfg = TrainConfig(**vars(args))
    cfg.command = "python train.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    return cfg, resume


def main(argv=None):
    cfg, resume = parse_args(argv)
    try:
        fetch_data.fetch_dataset(cfg.data_dir, quiet=True)
        train(cfg, resume=resume)
    except (DataError, ImageReadError, ModelLoadError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        if not isinstance(e, ModelLoadError) and Path(cfg.out, "last.pt").is_file():
            print(f"(the last finished epoch is in {Path(cfg.out, 'last.pt')}; once this is "
                  f"fixed, add --resume to continue from it)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
