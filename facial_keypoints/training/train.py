"""Train a keypoint model: one function, one command, for every network of ``keypoints.nets``
(and the course's ``Net``, which ``models.py`` registers).

Examples::

    # the course Net, course-style settings
    python train.py --arch net --input-size 224 --loss mse --optimizer adam --epochs 10

    # the shipped model (the exact command: the Makefile's MODEL_ARGS, `make model`, and the
    # model card, facial_keypoints/keypoints/shipped/MODEL_CARD.md)
    python train.py --arch heatmap --width 32 --input-size 112 --extra-data 300w+afw \\
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

import csv
import math
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from matplotlib.figure import Figure
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from facial_keypoints.evaluation.metrics import nme
from facial_keypoints.files import atomic_path, first_line
from facial_keypoints.images import GRAY_WEIGHTS
from facial_keypoints.keypoints.checkpoints import (
    atomic_torch_save,
    checkpoint_meta,
    load_model,
    load_weights,
    save_checkpoint,
)
from facial_keypoints.keypoints.nets import build_model, count_parameters
from facial_keypoints.keypoints.runtime import ModelLoadError
from facial_keypoints.landmarks import N_KEYPOINTS
from facial_keypoints.training.config import LOSSES, OPTIMIZERS, TrainConfig, WingLoss
from facial_keypoints.training.loaders import (
    Runtime,
    all_sum,
    epoch_seed,
    make_datasets,
    seed_everything,
    train_loader,
    val_loader,
)

#: Architectures whose weights fit any input size (fully convolutional), so that ``--init``
#: may start them at another size.
RESIZABLE = ("heatmap", "pip")


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
    """The state ``train`` writes to ``RUN/last.pt`` after every epoch, checked. Read with
    ``weights_only=True``, as every file from a user: tensors, numbers, strings and containers
    only, so a crafted file cannot run code (it is refused as unreadable)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
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
    """Load the weights of checkpoint ``cfg.init`` into ``model`` (fine-tuning). The checkpoint
    must describe the same architecture and arguments, with two exceptions that keep every
    weight's meaning: a fully convolutional model (heatmap, pip) may change its input size
    (a resolution fine-tune), and a grayscale model may start a colour one (``--color``): its
    first convolution is spread over R, G and B by ``images.GRAY_WEIGHTS``, so the colour model
    starts out computing exactly what the grayscale one computed from the same photo."""
    init_model, init_meta = load_model(cfg.init, expect_arch=cfg.arch)
    have, want = dict(init_meta.get("arch_args", {})), dict(cfg.arch_args())
    same_size = init_meta["input_size"] == cfg.input_size
    if cfg.arch in RESIZABLE:
        have.pop("input_size", None), want.pop("input_size", None)
        same_size = True
    to_color = have.pop("in_channels", 1) == 1 and want.get("in_channels", 1) == 3
    if to_color:
        want.pop("in_channels")
    if have != want or not same_size:
        raise ModelLoadError(f"{cfg.init}: a {init_meta['arch']} {init_meta.get('arch_args')} "
                             f"model for {init_meta['input_size']}-px input; this run trains "
                             f"{cfg.arch} {cfg.arch_args()} at {cfg.input_size} px. Pass the "
                             f"same --arch/--width/--input-size, or leave out --init.")
    state = init_model.state_dict()
    if to_color:
        weights = torch.from_numpy(GRAY_WEIGHTS)
        target = model.state_dict()
        for name, value in state.items():
            if value.ndim == 4 and value.shape[1] == 1 and target[name].shape[1] == 3:
                state[name] = value * weights[None, :, None, None]
    load_weights(model, state, cfg.init)
