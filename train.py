"""Train a keypoint model: one function, one command, for every model in ``models.py``.

Examples::

    # the course Net, course-style settings
    python train.py --arch net --input-size 224 --loss mse --optimizer adam --epochs 10

    # the shipped model (the exact command is in saved_models/MODEL_CARD.md, or `make model`)
    python train.py --arch pip --width 32 --input-size 128 --extra-data 300w+afw \\
        --markups course,300w ... --out runs/shipped

    # on a GPU, on several GPUs, on several machines (same command, same checkpoints)
    python train.py ... --device cuda
    torchrun --nproc_per_node 4 train.py ...
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 --rdzv_backend c10d \\
        --rdzv_endpoint HOST:29500 train.py ...

The training split is divided by person (frames of one person are near-duplicates, so a split
by frame would leak) into train and validation; with 300-W faces added, a fifth of those photos
is held out too. Each epoch logs train/val loss and val NME to ``<out>/log.csv`` and draws
``<out>/curves.png``; ``<out>/last.pt`` (resumable with ``--resume``) and ``<out>/best.pt``
(lowest validation NME) are written atomically. Training stops early when the validation NME
has not improved for ``--patience`` epochs. The same seed gives the same numbers on the CPU.

Under ``torchrun`` every process trains on its own shard of each epoch's samples
(DistributedDataParallel: NCCL on GPUs, gloo on CPUs), the validation NME is summed over all
processes (every face counted once), and only the first process prints and writes files.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import random
import shlex
import sys
import time
import typing
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from matplotlib.figure import Figure
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, Sampler
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


class WingLoss(nn.Module):
    """Wing loss (Feng et al., CVPR 2018) on coordinates, measured in model-input pixels
    (``scale`` = pixels per normalised unit): ``w ln(1 + |x| / eps)`` below ``w``, ``|x| - C``
    above, so that small and medium errors weigh more than under L1."""

    def __init__(self, scale=1.0, w=10.0, eps=2.0):
        super().__init__()
        self.scale, self.w, self.eps = scale, w, eps
        self.c = w - w * math.log(1 + w / eps)

    def forward(self, pred, target):
        x = (pred - target).abs() * self.scale
        loss = torch.where(x < self.w, self.w * torch.log1p(x / self.eps), x - self.c)
        return loss.mean() / self.scale


LOSSES = {"mse": nn.MSELoss, "l1": nn.L1Loss, "smoothl1": nn.SmoothL1Loss, "wing": WingLoss}
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "rmsprop": torch.optim.RMSprop}
SCHEDULES = ("none", "cosine", "step", "plateau")
#: The mark-up heads a model can have: one for every face, or one per mark-up.
MARKUPS = ("course", "course,300w")


def option(default, help, **kw):
    """A training setting: its default, its ``--help`` text and (``choices=...``) its values."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Every setting of a training run: the one declaration that the command line is built
    from (``build_parser``) and that each checkpoint stores (``train_config``)."""
    # the model
    arch: str = option("resnet18", "model architecture (models.py)", choices=tuple(ARCHITECTURES))
    width: int = option(32, "encoder channel width (64: torchvision's resnet18)")
    input_size: int = option(112, "side of the square model input, in pixels")
    color: bool = option(False, "RGB input (--no-color: grayscale)")
    markups: str = option("course", "output heads: 'course' (one for every face) or "
                                    "'course,300w' (one per mark-up)", choices=MARKUPS)
    aux_weight: float | None = option(None, "weight of the heatmap (score map) loss beside "
                                            "the coordinate loss (default: the model's)")
    # the data
    pipeline: str = option("face", "face crops with augmentation, or the course transforms",
                           choices=("face", "course"))
    crop_scale: float = option(CROP_SCALE, "face crop side / larger side of the keypoints' box")
    extra_data: str = option("", "also train on 300-W faces: 300w_train's training part "
                                 "('300w'), and AFW ('300w+afw')",
                             choices=("", "300w", "300w+afw"))
    mix_300w: float | None = option(None, "share of 300-W faces in each epoch (drawn with "
                                          "replacement; default: as many as there are)")
    epoch_size: int | None = option(None, "faces per epoch when mixing (default: all)")
    val_fraction: float = option(0.1, "share of the course's people held out for validation")
    holdout_fraction: float = option(0.2, "share of the 300-W photos held out for validation")
    holdout_seed: int = option(0, "seed of the 300-W held-out split")
    subset: int | None = option(None, "use only N course training frames")
    val_subset: int | None = option(None, "use only N validation frames of each set")
    data_dir: str | None = option(None, "the dataset's folder (default: data/)")
    # augmentation
    augment: bool = option(True, "augment the training crops (--no-augment: none)")
    degrees: float = option(25.0, "max rotation")
    flip: float = option(0.5, "mirror probability of course faces (left/right indices swapped)")
    flip_300w: float = option(0.5, "mirror probability of 300-W faces (mirror-symmetric labels)")
    degrade: float = option(0.0, "probability of each of blur, noise and an occluding patch")
    jitter_scale: float = option(0.1, "face-crop size jitter (fraction), as from an imprecise "
                                      "face detector")
    jitter_shift: float = option(0.06, "face-crop centre jitter (fraction of the crop side)")
    color_jitter: float = option(0.4, "brightness and contrast (and saturation) jitter")
    gamma: float = option(0.0, "gamma jitter: gamma drawn from [1 - g, 1 + g]")
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
    ema: float = option(0.0, "decay of an exponential moving average of the weights, which is "
                             "then what is validated and saved (0: none)")
    batch_size: int = option(32, "training batch size per process")
    val_batch_size: int = option(64, "validation batch size")
    epochs: int = option(30, "number of epochs")
    patience: int = option(20, "stop early after this many epochs without a validation gain")
    max_minutes: float | None = option(None, "stop (cleanly, resumable) after this much "
                                             "training time")
    init: str | None = option(None, "start from the weights of this checkpoint (fine-tuning)")
    seed: int = option(0, "random seed (also of the split by person)")
    # the run
    out: str = option("runs/default", "run folder for log, curves, checkpoints")
    device: str = option("auto", "auto (a GPU when there is one), cpu, cuda or cuda:N")
    amp: str = option("auto", "mixed precision on a GPU: auto (bf16 where supported, else "
                              "fp16), bf16, fp16 or none; always none on the CPU",
                      choices=("auto", "bf16", "fp16", "none"))
    threads: int | None = option(None, "torch CPU threads")
    workers: int | None = option(None, "data loader processes (default: 1 on the CPU, up to "
                                       "8 per GPU)")
    command: str = option("", "the command that started the run (recorded, not an option)")

    def arch_args(self):
        heads = {} if self.markups == "course" else {"heads": len(self.markups.split(","))}
        channels = {"in_channels": 3} if self.color else {}
        if self.arch == "resnet18":
            return {"width": self.width, **channels, **heads}
        if self.arch in ("heatmap", "pip"):
            return {"width": self.width, "input_size": self.input_size, **channels, **heads}
        if self.arch == "net":
            return {"input_size": self.input_size}
        return {}

    @property
    def kp_mean(self):
        return self.input_size / 2

    @property
    def kp_std(self):
        return self.input_size / 4

    @property
    def uses_300w(self):
        return self.extra_data.startswith("300w")

    def check(self):
        """Raise ``ValueError`` naming the option when a setting has no allowed value."""
        for f in fields(self):
            allowed = f.metadata.get("choices")
            if allowed is not None and getattr(self, f.name) not in allowed:
                raise ValueError(f"--{f.name.replace('_', '-')} must be one of {allowed}, got "
                                 f"{getattr(self, f.name)!r}")
        if self.arch == "net" and (self.markups != "course" or self.color):
            raise ValueError("the course Net has one grayscale head: leave out --markups "
                             "and --color")
        if self.mix_300w is not None and not (self.uses_300w and 0 < self.mix_300w < 1):
            raise ValueError("--mix-300w needs --extra-data and a share between 0 and 1")


# --------------------------------------------------------------------------------------------
# Processes and devices
# --------------------------------------------------------------------------------------------
@dataclass
class Runtime:
    """Where this process trains: its rank among ``world`` processes, its device, its mixed
    precision. One process: rank 0 of 1."""
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    amp: torch.dtype | None = None

    @property
    def main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world > 1


def start_runtime(cfg: TrainConfig) -> Runtime:
    """The process group under ``torchrun`` (its ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), the
    device and the mixed precision that ``cfg`` asks for."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank, local = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device}: no CUDA GPU is visible to PyTorch "
                         f"(torch {torch.__version__}); use --device cpu")
    if want == "cuda":
        want = f"cuda:{local % torch.cuda.device_count()}"
    device = torch.device(want)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=10))
    amp = None
    if device.type == "cuda" and cfg.amp != "none":
        bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported())
        amp = torch.bfloat16 if bf16 else torch.float16
    return Runtime(rank, world, device, amp)


def all_sum(rt: Runtime, *values):
    """Sums of ``values`` over all processes (themselves with one process)."""
    if not rt.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64,
                     device=rt.device if rt.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return tuple(t.tolist())


def epoch_seed(seed, epoch, rank=0):
    """The seed of one process's randomness in one epoch (augmentation, data order)."""
    return (seed * 1_000_003 + epoch * 1009 + rank) % 2**31


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
class WithHead(Dataset):
    """A dataset whose samples also say which mark-up head they train (``"head"``)."""

    def __init__(self, dataset, head):
        self.dataset, self.head = dataset, head

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return {**self.dataset[i], "head": self.head}

    @property
    def filenames(self):
        return self.dataset.filenames


class EpochSampler(Sampler):
    """The training samples of one epoch, in an order drawn from ``seed`` and the epoch (the
    same in every process), dealt out to the ``world`` processes: process ``rank`` takes every
    ``world``-th, so the shards are disjoint and together they are the epoch. With
    ``weights``, ``num_samples`` indices are drawn with replacement (mixing data sets)."""

    def __init__(self, n, seed=0, rank=0, world=1, weights=None, num_samples=None):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.num_samples = num_samples or n
        self.epoch = 1

    def set_epoch(self, epoch):
        self.epoch = epoch

    def order(self):
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        if self.weights is None:
            return torch.randperm(self.n, generator=g)
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g)

    def __iter__(self):
        return iter(self.order()[self.rank::self.world].tolist())

    def __len__(self):
        return len(range(self.rank, self.num_samples if self.weights is not None else self.n,
                         self.world))


def _transform(cfg, flip):
    if cfg.pipeline == "course":
        return data_load.course_transform(cfg.input_size, cfg.kp_mean, cfg.kp_std, train=True)
    return data_load.face_transform(cfg.input_size, cfg.crop_scale, cfg.kp_mean, cfg.kp_std,
                                    augment=cfg.augment, degrees=cfg.degrees,
                                    jitter_scale=cfg.jitter_scale, jitter_shift=cfg.jitter_shift,
                                    flip=flip, degrade=cfg.degrade, color_jitter=cfg.color_jitter,
                                    gamma=cfg.gamma, color=cfg.color)


def _val_transform(cfg):
    if cfg.pipeline == "course":
        return data_load.course_transform(cfg.input_size, cfg.kp_mean, cfg.kp_std, train=False)
    return data_load.face_transform(cfg.input_size, cfg.crop_scale, cfg.kp_mean, cfg.kp_std,
                                    color=cfg.color)


def make_datasets(cfg: TrainConfig):
    """``(training set, {name: validation set})``: the course's people split by person; with
    ``--extra-data``, 300-W's photos split too (``data_300w.split_300w``), their held-out part
    a second validation set. Samples carry the index of the head they train."""
    cfg.check()
    head_300w = 1 if cfg.markups == "course,300w" else 0
    train_names, val_names = data_load.person_split(asdict(cfg))
    parts = [WithHead(data_load.dataset("train", _transform(cfg, cfg.flip), cfg.data_dir,
                                        names=train_names, subset=cfg.subset, seed=cfg.seed), 0)]
    vals = {"course": WithHead(data_load.dataset("train", _val_transform(cfg), cfg.data_dir,
                                                 names=val_names, subset=cfg.val_subset,
                                                 seed=cfg.seed), 0)}
    if cfg.uses_300w:
        if fetch_data.fetch_300w(cfg.data_dir, quiet=True) is None:
            raise DataError("--extra-data 300w needs data/300w_train: set "
                            f"${fetch_data.MIRROR_ENV} or convert 300-W with "
                            "`python data_300w.py`")
        tf = _transform(cfg, cfg.flip_300w)
        train_300w, held = data_300w.split_300w_files(cfg.data_dir, cfg.holdout_fraction,
                                                      cfg.holdout_seed)
        parts.append(WithHead(data_300w.dataset_300w(tf, cfg.data_dir, names=train_300w),
                              head_300w))
        if cfg.extra_data == "300w+afw":
            if fetch_data.fetch_300w(cfg.data_dir, quiet=True, name="300w_afw") is None:
                raise DataError(f"--extra-data 300w+afw needs data/300w_afw: set "
                                f"${fetch_data.MIRROR_ENV} to a mirror that has it")
            parts.append(WithHead(data_300w.dataset_300w(tf, cfg.data_dir, name="300w_afw"),
                                  head_300w))
        vals["300w"] = WithHead(data_300w.dataset_300w(_val_transform(cfg), cfg.data_dir,
                                                       names=held, subset=cfg.val_subset,
                                                       seed=cfg.seed), head_300w)
    train_ds = parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)
    return train_ds, vals


def _worker_init(worker_id):
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _workers(cfg, rt):
    if cfg.workers is not None:
        return cfg.workers
    if rt.device.type == "cuda":
        return max(1, min(8, (os.cpu_count() or 2) // rt.world - 1))
    return 1


def train_loader(cfg, rt, train_ds, epoch):
    """This process's loader for one epoch (its shard, its seed: see ``EpochSampler``)."""
    weights = num_samples = None
    if cfg.mix_300w is not None:
        sizes = [len(d) for d in train_ds.datasets]
        course, other = sizes[0], sum(sizes[1:])
        weights = [(1 - cfg.mix_300w) / course] * course + [cfg.mix_300w / other] * other
        num_samples = cfg.epoch_size or len(train_ds)
    sampler = EpochSampler(len(train_ds), cfg.seed, rt.rank, rt.world, weights, num_samples)
    sampler.set_epoch(epoch)
    g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, rt.rank))
    return DataLoader(train_ds, cfg.batch_size, sampler=sampler, generator=g,
                      drop_last=len(sampler) > cfg.batch_size, num_workers=_workers(cfg, rt),
                      worker_init_fn=_worker_init, pin_memory=rt.device.type == "cuda")


def val_loader(cfg, rt, val_ds):
    """This process's share of a validation set: every ``world``-th face, none twice."""
    shard = list(range(rt.rank, len(val_ds), rt.world))
    return DataLoader(val_ds, cfg.val_batch_size, sampler=shard, num_workers=_workers(cfg, rt),
                      worker_init_fn=_worker_init, pin_memory=rt.device.type == "cuda")


def make_loaders(cfg: TrainConfig):
    """The first epoch's training loader and the course validation loader, in one process."""
    train_ds, vals = make_datasets(cfg)
    rt = Runtime()
    return train_loader(cfg, rt, train_ds, 1), val_loader(cfg, rt, vals["course"])


# --------------------------------------------------------------------------------------------
# One epoch
# --------------------------------------------------------------------------------------------
class TrainView(nn.Module):
    """The model as training calls it: ``forward`` gives ``forward_train``'s dict (what
    ``DistributedDataParallel`` wraps), for the course ``Net`` its coordinates as one head."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        if hasattr(self.model, "forward_train"):
            return self.model.forward_train(x)
        return {"coords": self.model(x)[:, None]}


def run_epoch(model, loader, criterion, optimizer=None, desc="", kp_std=1.0, progress=True,
              aux_weight=None, rt=None, ema=None, scaler=None):
    """One pass over ``loader``; trains when an optimizer is given. Returns (loss, NME), each
    averaged over every face of every process.

    ``model`` is a ``TrainView`` (or its ``DistributedDataParallel``); each face's loss is on its
    own head's coordinates, plus ``aux_weight`` x the model's ``aux_loss`` (heatmaps). With
    ``ema``, the moving average is updated after each step.
    """
    rt = rt or Runtime()
    if not isinstance(model, (TrainView, DistributedDataParallel)):
        model = TrainView(model)
    training = optimizer is not None
    model.train(training)
    core = model.module.model if isinstance(model, DistributedDataParallel) else model.model
    weight = getattr(core, "AUX_WEIGHT", 0.0) if aux_weight is None else aux_weight
    total = count = nme_sum = 0.0
    bar = tqdm(loader, desc=desc, leave=False, unit="batch", mininterval=2,
               disable=None if progress and rt.main else True)  # None: off when not a tty
    ddp = isinstance(model, DistributedDataParallel)
    join = model.join() if training and ddp else nullcontext()  # shards may differ by a batch
    autocast = torch.autocast("cuda", dtype=rt.amp) if rt.amp else nullcontext()
    with join, torch.set_grad_enabled(training):
        for batch in bar:
            images = batch["image"].to(rt.device, non_blocking=True)
            targets = batch["keypoints"].to(rt.device, non_blocking=True).flatten(1)
            head = batch.get("head", torch.zeros(len(images), dtype=torch.long)).to(rt.device)
            with autocast:
                out = model(images)
                outputs = out["coords"][torch.arange(len(head), device=rt.device), head].float()
                loss = criterion(outputs, targets)
                if weight:
                    loss = loss + weight * core.aux_loss(out, targets, head).float()
            if training:
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                if ema is not None:
                    ema.update_parameters(core)
            total += loss.item() * len(images)
            count += len(images)
            nme_sum += float(nme(outputs.detach().cpu().view(-1, N_KEYPOINTS, 2).numpy() * kp_std,
                                 batch["keypoints"].numpy() * kp_std).sum())
            bar.set_postfix(loss=f"{total / count:.4f}")
    total, nme_sum, count = all_sum(rt, total, nme_sum, count)
    if not count:
        return float("nan"), float("nan")
    return total / count, nme_sum / count


def make_criterion(cfg):
    return WingLoss(cfg.kp_std) if cfg.loss == "wing" else LOSSES[cfg.loss]()


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
    b.plot(epochs, [100 * h["val_nme"] for h in history], color="C2", label="course people")
    if "val_nme_300w" in history[0]:
        b.plot(epochs, [100 * h["val_nme_300w"] for h in history], color="C3",
               label="300-W held out")
        b.legend()
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


def cpu_state(module):
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, resume=False, progress=True, rt=None):
    """Train a model as ``cfg`` says. Returns a dict with the best val NME, epochs and paths.

    ``rt``: where this process trains (``start_runtime``); default: one process on the CPU.
    """
    cfg.check()
    rt = rt or Runtime()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.pt"
    seed_everything(cfg.seed)
    train_ds, vals = make_datasets(cfg)
    model = build_model(cfg.arch, **cfg.arch_args())
    if cfg.init and not (resume and last_path.is_file()):
        init_from(model, cfg)
    model.to(rt.device)
    view = TrainView(model)
    if rt.distributed:
        view = DistributedDataParallel(view, device_ids=[rt.device] if rt.device.type == "cuda"
                                       else None)
    criterion = make_criterion(cfg)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler("cuda") if rt.amp == torch.float16 else None
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema),
                        use_buffers=True) if cfg.ema else None

    history, best_nme, start_epoch, elapsed = [], math.inf, 1, 0.0
    if resume and last_path.is_file():
        state = load_training_state(last_path)
        load_weights(model, state["model"], last_path)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history, best_nme = state["history"], state["best_nme"]
        start_epoch, elapsed = state["epoch"] + 1, state.get("elapsed", 0.0)
        if progress and rt.main:
            print(f"resumed from {last_path} at epoch {start_epoch}")

    command = cfg.command or f"train.train({cfg!r})"
    meta = checkpoint_meta(cfg.arch, cfg.arch_args(), cfg.input_size, cfg.crop_scale,
                           cfg.kp_mean, cfg.kp_std, command=command, color=cfg.color,
                           pipeline=cfg.pipeline, train_config=asdict(cfg),
                           markups=cfg.markups.split(","))
    if progress and rt.main:
        val_sizes = " / ".join(f"{len(v)} {k}" for k, v in vals.items())
        print(f"{cfg.arch} {cfg.arch_args()}: {count_parameters(model):,} parameters; "
              f"{len(train_ds)} training faces, validation {val_sizes} (split by person"
              f"{' and photo' if cfg.uses_300w else ''}); {rt.world} process(es) on "
              f"{rt.device}{f' with {rt.amp}' if rt.amp else ''}; effective batch "
              f"{cfg.batch_size * rt.world} (batch {cfg.batch_size} x {rt.world}), lr {cfg.lr}")
    since_best = 0
    if history:
        best_epoch = min(history, key=lambda h: h.get("val_score", h["val_nme"]))["epoch"]
        since_best = history[-1]["epoch"] - best_epoch
    stopped = "epochs"
    kwargs = dict(kp_std=cfg.kp_std, progress=progress, aux_weight=cfg.aux_weight, rt=rt)
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        torch.manual_seed(epoch_seed(cfg.seed, epoch, rt.rank))
        train_loss, train_nme = run_epoch(view, train_loader(cfg, rt, train_ds, epoch),
                                          criterion, optimizer, ema=ema, scaler=scaler,
                                          desc=f"epoch {epoch}/{cfg.epochs}", **kwargs)
        scored = TrainView(ema.module if ema is not None else model)
        row = {}
        for name, val_ds in vals.items():
            loss, val_nme = run_epoch(scored, val_loader(cfg, rt, val_ds), criterion,
                                      desc=f"validation ({name})", **kwargs)
            key = "" if name == "course" else f"_{name}"
            row[f"val_loss{key}"], row[f"val_nme{key}"] = loss, val_nme
        score = float(np.mean([row[k] for k in row if k.startswith("val_nme")]))
        lr = optimizer.param_groups[0]["lr"]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(score)
        elif scheduler is not None:
            scheduler.step()
        elapsed += time.perf_counter() - t0
        more = {k: v for k, v in row.items() if k not in ("val_loss", "val_nme")}
        if more:  # several validation sets: their mean NME ranks the epochs
            more["val_score"] = score
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": row["val_loss"],
                        "train_nme": train_nme, "val_nme": row["val_nme"], **more, "lr": lr,
                        "minutes": round(elapsed / 60, 3)})
        improved = score < best_nme
        if improved:
            best_nme, since_best = score, 0
        else:
            since_best += 1
        if rt.main:
            saved = ema.module if ema is not None else model
            if improved:
                save_checkpoint(best_path, saved, {**meta, "metrics": {
                    "val_nme": row["val_nme"], **({"val_nme_300w": row["val_nme_300w"]}
                                                  if "val_nme_300w" in row else {}),
                    "val_score": score, "epoch": epoch,
                    "train_minutes": round(elapsed / 60, 2)}})
            atomic_torch_save({"model": cpu_state(model), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict() if scheduler else None,
                               "ema": ema.state_dict() if ema is not None else None,
                               "scaler": scaler.state_dict() if scaler is not None else None,
                               "epoch": epoch, "history": history, "best_nme": best_nme,
                               "elapsed": elapsed, "world": rt.world, "config": asdict(cfg)},
                              last_path)
            write_log(history, out / "log.csv")
            plot_curves(history, out / "curves.png")
        if progress and rt.main:
            more = "".join(f"  {k[8:]} {100 * v:.2f} %" for k, v in row.items()
                           if k.startswith("val_nme_"))
            print(f"epoch {epoch:3d}  train loss {train_loss:.4f}  val loss "
                  f"{row['val_loss']:.4f}  val NME {100 * row['val_nme']:.2f} %{more}"
                  f"{'  *' if improved else ''}  ({elapsed / 60:.1f} min)", flush=True)
        if not improved and since_best >= cfg.patience:
            stopped = f"early stop: no val NME gain in {cfg.patience} epochs"
            break
        if cfg.max_minutes is not None and elapsed / 60 >= cfg.max_minutes:
            stopped = f"time budget of {cfg.max_minutes} min reached (resume with --resume)"
            break
    if rt.distributed:
        dist.barrier()  # every process ends with the files written
    if progress and rt.main:
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
    rank = int(os.environ.get("RANK", 0))
    rt = None
    try:
        rt = start_runtime(cfg)
        if rt.main:
            fetch_data.fetch_dataset(cfg.data_dir, quiet=True)
        if rt.distributed:
            dist.barrier()  # the others wait for the data
        train(cfg, resume=resume, rt=rt)
    except (DataError, ImageReadError, ModelLoadError, ValueError) as e:
        where = f"rank {rank}: " if rt is not None and rt.distributed else ""
        print(f"error: {where}{one_line(e)}", file=sys.stderr)
        if not isinstance(e, ModelLoadError) and Path(cfg.out, "last.pt").is_file():
            print(f"(the last finished epoch is in {Path(cfg.out, 'last.pt')}; once this is "
                  f"fixed, add --resume to continue from it)", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
