"""Training past one process: the sharded sampler, the validation NME summed over processes,
and ``torchrun`` end to end on the CPU (gloo): a checkpoint ``detect.py`` loads, a run killed
mid-epoch and resumed, a failing run that ends with a clear message instead of a hang."""
from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facial_keypoints.keypoints import checkpoints, nets
from facial_keypoints.training import loaders, train
from facial_keypoints.training.config import TrainConfig
from facial_keypoints.training.loaders import EpochSampler, Runtime
from helpers_keypoints import ASTRONAUT, ROOT, needs_data

TINY = dict(arch="resnet18", width=8, input_size=48, subset=64, val_subset=20, epochs=1,
            batch_size=8, workers=0)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# --------------------------------------------------------------------------------------------
# The sampler: disjoint shards whose union is the epoch
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, world", [(50, 2), (51, 2), (7, 3), (100, 4)])
def test_shards_are_disjoint_and_together_are_the_training_set(n, world):
    for epoch in (1, 2):
        shards = []
        for rank in range(world):
            s = EpochSampler(n, seed=3, rank=rank, world=world)
            s.set_epoch(epoch)
            shards.append(list(s))
            assert len(shards[-1]) == len(s)
        assert sum(len(x) for x in shards) == n                       # none twice
        assert sorted(i for x in shards for i in x) == list(range(n))  # none missing
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    # each epoch reshuffles, the same way in every process
    a, b = EpochSampler(n, seed=3), EpochSampler(n, seed=3)
    a.set_epoch(1)
    b.set_epoch(2)
    assert list(a) != list(b) and sorted(a) == sorted(b)
    assert list(EpochSampler(n, seed=3)) == list(EpochSampler(n, seed=3))


def test_weighted_epochs_are_shared_out_the_same_way():
    weights = [0.9] * 10 + [0.1] * 10
    whole = EpochSampler(20, seed=0, weights=weights, num_samples=40)
    parts = [EpochSampler(20, seed=0, rank=r, world=2, weights=weights, num_samples=40)
             for r in range(2)]
    drawn = whole.order().tolist()
    assert [i for p in parts for i in p] != [] and sorted(i for p in parts for i in p) == \
        sorted(drawn)
    assert list(parts[0]) == drawn[0::2] and list(parts[1]) == drawn[1::2]


# --------------------------------------------------------------------------------------------
# The validation NME over two processes equals the one-process figure
# --------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _validate(rank, world, port, cfg_dict, weights, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        cfg = TrainConfig(**cfg_dict)
        _, vals = loaders.make_datasets(cfg)
        model = nets.build_model(cfg.arch, **cfg.arch_args())
        model.load_state_dict(weights)
        rt = Runtime(rank, world)
        loss, nme = train.run_epoch(model, loaders.val_loader(cfg, rt, vals["course"]),
                                    torch.nn.L1Loss(), kp_std=cfg.kp_std, progress=False, rt=rt)
        out.put((rank, loss, nme))
    finally:
        dist.destroy_process_group()


@needs_data
def test_validation_nme_over_two_processes_equals_one_process():
    cfg = TrainConfig(**TINY, val_fraction=0.02)          # 20 faces: 10 in each process
    torch.manual_seed(0)
    model = nets.build_model(cfg.arch, **cfg.arch_args())
    _, vals = loaders.make_datasets(cfg)
    single = train.run_epoch(model, loaders.val_loader(cfg, Runtime(), vals["course"]),
                             torch.nn.L1Loss(), kp_std=cfg.kp_std, progress=False)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    mp.start_processes(_validate, args=(2, _free_port(), asdict(cfg), model.state_dict(), out),
                       nprocs=2, start_method="spawn")
    results = sorted(out.get(timeout=60) for _ in range(2))
    for _, loss, nme in results:  # every process holds the sum over both
        assert loss == pytest.approx(single[0], rel=1e-5)
        assert nme == pytest.approx(single[1], rel=1e-5)


# --------------------------------------------------------------------------------------------
# torchrun end to end (two CPU processes, gloo)
# --------------------------------------------------------------------------------------------
def torchrun(*args, out, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "train.py", *map(str, args), "--out", str(out)]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


TINY_ARGS = ["--arch", "resnet18", "--width", "8", "--input-size", "48", "--subset", "64",
             "--val-subset", "20", "--batch-size", "8", "--workers", "0"]


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@needs_data
def test_torchrun_trains_a_checkpoint_that_detect_loads(tmp_path):
    proc = torchrun(*TINY_ARGS, "--epochs", "1", out=tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one process prints: the header once, with the effective batch
    assert proc.stdout.count("parameters;") == 1, proc.stdout
    assert "2 process(es) on cpu; effective batch 16 (batch 8 x 2)" in proc.stdout
    assert len(read_log(tmp_path / "run" / "log.csv")) == 1
    meta = checkpoints.load_model(tmp_path / "run" / "best.pt")[1]
    assert meta["train_config"]["subset"] == 64
    detect = subprocess.run([sys.executable, "detect.py", ASTRONAUT, "--model",
                             tmp_path / "run" / "best.pt", "--json", tmp_path / "out.json",
                             "--quiet"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=240)
    assert detect.returncode == 0, detect.stderr[-3000:]


@pytest.mark.slow
@needs_data
def test_torchrun_killed_mid_epoch_resumes(tmp_path):
    out = tmp_path / "run"
    args = [*TINY_ARGS, "--subset", "800", "--epochs", "3"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "train.py", *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "last.pt").is_file():
        time.sleep(0.2)
    assert (out / "last.pt").is_file(), "the first epoch never finished"
    time.sleep(1.0)                                   # into the second epoch
    proc.send_signal(signal.SIGTERM)                  # as a scheduler or Ctrl-C stops a job:
    proc.wait(timeout=60)                             # torchrun stops both workers
    time.sleep(1.0)
    assert not subprocess.run(["pgrep", "-f", str(out)], capture_output=True).stdout
    finished = torch.load(out / "last.pt", weights_only=False)["epoch"]
    assert 1 <= finished < 3, "killed too late: the run had ended"
    before = read_log(out / "log.csv")
    done = torchrun(*args, "--resume", out=out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {out / 'last.pt'} at epoch {finished + 1}" in done.stdout
    after = read_log(out / "log.csv")
    assert [int(r["epoch"]) for r in after] == [1, 2, 3]
    assert after[:finished] == before[:finished]      # the finished epochs are kept as they were
    assert torch.load(out / "last.pt", weights_only=False)["world"] == 2


@pytest.mark.slow
@needs_data
def test_a_failing_torchrun_ends_with_one_clear_line(tmp_path):
    start = time.time()
    proc = torchrun(*TINY_ARGS, "--epochs", "1", "--init", tmp_path / "missing.pt",
                    out=tmp_path / "run", timeout=240)
    assert proc.returncode != 0
    assert time.time() - start < 200                    # no hang
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: rank")]
    assert lines and all("missing.pt: no such weights file" in line for line in lines), \
        proc.stderr[-3000:]
    assert "Traceback" not in "".join(lines)


def test_one_process_needs_no_process_group():
    rt = loaders.start_runtime(TrainConfig(device="cpu"))
    assert (rt.rank, rt.world, rt.device.type, rt.amp) == (0, 1, "cpu", None)
    assert not dist.is_initialized()
    assert loaders.all_sum(rt, 1.5, 2.0) == (1.5, 2.0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            loaders.start_runtime(TrainConfig(device="cuda"))
    assert np.isfinite(loaders.epoch_seed(0, 1))
