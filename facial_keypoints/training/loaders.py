"""The processes, datasets and data loaders of a training run: one process or several
(``torchrun``: ``Runtime``), the course and 300-W datasets with their mark-up head
(``make_datasets``), seeded samplers and loaders.
"""
from __future__ import annotations

import datetime
import os
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from facial_keypoints.data.course import DataError, dataset, person_split
from facial_keypoints.data.fetch import MIRROR_ENV, fetch_300w
from facial_keypoints.data.w300 import dataset_300w, split_300w_files
from facial_keypoints.training.config import TrainConfig
from facial_keypoints.training.transforms import course_transform, face_transform


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
        return course_transform(cfg.input_size, cfg.kp_mean, cfg.kp_std, train=True)
    return face_transform(cfg.input_size, cfg.crop_scale, cfg.kp_mean, cfg.kp_std,
                                    augment=cfg.augment, degrees=cfg.degrees,
                                    jitter_scale=cfg.jitter_scale, jitter_shift=cfg.jitter_shift,
                                    flip=flip, degrade=cfg.degrade, color_jitter=cfg.color_jitter,
                                    gamma=cfg.gamma, color=cfg.color)


def _val_transform(cfg):
    if cfg.pipeline == "course":
        return course_transform(cfg.input_size, cfg.kp_mean, cfg.kp_std, train=False)
    return face_transform(cfg.input_size, cfg.crop_scale, cfg.kp_mean, cfg.kp_std,
                                    color=cfg.color)


def make_datasets(cfg: TrainConfig):
    """``(training set, {name: validation set})``: the course's people split by person; with
    ``--extra-data``, 300-W's photos split too (``data.w300.split_300w``), their held-out part
    a second validation set. Samples carry the index of the head they train."""
    cfg.check()
    head_300w = 1 if cfg.markups == "course,300w" else 0
    train_names, val_names = person_split(asdict(cfg))
    parts = [WithHead(dataset("train", _transform(cfg, cfg.flip), cfg.data_dir,
                                        names=train_names, subset=cfg.subset, seed=cfg.seed), 0)]
    vals = {"course": WithHead(dataset("train", _val_transform(cfg), cfg.data_dir,
                                                 names=val_names, subset=cfg.val_subset,
                                                 seed=cfg.seed), 0)}
    if cfg.uses_300w:
        if fetch_300w(cfg.data_dir, quiet=True) is None:
            raise DataError("--extra-data 300w needs data/300w_train: set "
                            f"${MIRROR_ENV} or convert 300-W with "
                            "`python -m facial_keypoints.cli.convert_300w`")
        tf = _transform(cfg, cfg.flip_300w)
        train_300w, held = split_300w_files(cfg.data_dir, cfg.holdout_fraction,
                                                      cfg.holdout_seed)
        parts.append(WithHead(dataset_300w(tf, cfg.data_dir, names=train_300w),
                              head_300w))
        if cfg.extra_data == "300w+afw":
            if fetch_300w(cfg.data_dir, quiet=True, name="300w_afw") is None:
                raise DataError(f"--extra-data 300w+afw needs data/300w_afw: set "
                                f"${MIRROR_ENV} to a mirror that has it")
            parts.append(WithHead(dataset_300w(tf, cfg.data_dir, name="300w_afw"),
                                  head_300w))
        vals["300w"] = WithHead(dataset_300w(_val_transform(cfg), cfg.data_dir,
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
