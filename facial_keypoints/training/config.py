"""What a training run is: ``TrainConfig`` (every option, with its help text), the one
argument parser built from it (``build_parser``), whose values each checkpoint stores, and the
losses and optimisers by name.
"""
from __future__ import annotations

import argparse
import math
import typing
from dataclasses import dataclass, field, fields

import torch
import torch.nn as nn

from facial_keypoints.files import command_line
from facial_keypoints.geometry import CROP_SCALE
from facial_keypoints.keypoints.nets import ARCHITECTURES


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
    arch: str = option("resnet18", "model architecture (keypoints/nets.py; net: the course's "
                       "models.py)", choices=ARCHITECTURES)  # live: the course adds "net"
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
    init: str | None = option(None, "start from the weights of this checkpoint (fine-tuning; a "
                                    "heatmap or pip model may change --input-size, and a "
                                    "grayscale one may start a --color one)")
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
        return {"input_size": self.input_size}  # the course's nets (models.py)

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
                raise ValueError(f"--{f.name.replace('_', '-')} must be one of "
                                 f"{list(allowed)}, got "
                                 f"{getattr(self, f.name)!r}")
        if self.arch.startswith("net") and (self.markups != "course" or self.color):
            raise ValueError("the course Net has one grayscale head: leave out --markups "
                             "and --color")
        if self.mix_300w is not None and not (self.uses_300w and 0 < self.mix_300w < 1):
            raise ValueError("--mix-300w needs --extra-data and a share between 0 and 1")


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


def parse_args(argv=None, prog=None):
    """``(TrainConfig, resume)`` from the command line; the config records the command
    (``files.command_line``: ``prog`` as typed, e.g. ``python train.py``)."""
    args = build_parser().parse_args(argv)
    resume = args.__dict__.pop("resume")
    cfg = TrainConfig(**vars(args))
    cfg.command = command_line(argv, prog)
    return cfg, resume
