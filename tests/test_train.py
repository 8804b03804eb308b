"""Tests of train.py with tiny runs (ResNet-18 at width 8 on 48-px crops of 24 frames): what a
run writes, reproducibility, resuming, early stopping, the split by person, the course Net."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from benchmarks import experiments
from facial_keypoints import images
from facial_keypoints.data import course, w300
from facial_keypoints.evaluation import evaluate
from facial_keypoints.keypoints import checkpoints, nets, pipeline, runtime
from facial_keypoints.training import config, loaders, train
from facial_keypoints.training.config import TrainConfig
from helpers_keypoints import needs_300w, needs_data

pytestmark = needs_data

TINY = dict(arch="resnet18", width=8, input_size=48, subset=24, val_subset=12, epochs=2,
            batch_size=8, workers=0)
LOG_COLUMNS = ["epoch", "train_loss", "val_loss", "train_nme", "val_nme", "lr", "minutes"]
NUMBERS = ["train_loss", "val_loss", "train_nme", "val_nme", "lr"]   # all but the time taken


def numbers(history):
    return [{k: row[k] for k in ["epoch"] + NUMBERS} for row in history]


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def state_dict_of(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_a")
    cfg = TrainConfig(**TINY, out=str(out), command="python train.py --tiny-test")
    return cfg, train.train(cfg, progress=False)


@pytest.fixture(scope="module")
def run_b(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_b")
    cfg = TrainConfig(**TINY, out=str(out))
    return cfg, train.train(cfg, progress=False)


# --------------------------------------------------------------------------------------------
# What a run writes
# --------------------------------------------------------------------------------------------
def test_tiny_run_writes_log_curves_and_checkpoints(run_a):
    cfg, result = run_a
    out = Path(cfg.out)
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "curves.png", "last.pt",
                                                     "log.csv"]   # no temporary files left
    rows = read_log(out / "log.csv")
    assert len(rows) == 2 and list(rows[0]) == LOG_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, logged in zip(rows, result["history"]):
        for key in NUMBERS:
            assert float(row[key]) == pytest.approx(logged[key], rel=1e-12)
            assert math.isfinite(float(row[key]))
    assert result["epochs"] == 2 and result["stopped"] == "epochs"
    assert result["best_val_nme"] == min(r["val_nme"] for r in result["history"])
    # cosine schedule: full learning rate in epoch 1, half of it in epoch 2 (of 2)
    assert [r["lr"] for r in result["history"]] == pytest.approx([cfg.lr, cfg.lr / 2])
    curves = images.load_image(out / "curves.png")
    assert curves.shape == (350, 1000, 3) and curves.std() > 10


def test_best_checkpoint_describes_itself(run_a):
    cfg, result = run_a
    model, meta = checkpoints.load_model(Path(cfg.out) / "best.pt")
    assert isinstance(model, nets.ResNet18Keypoints) and model.width == 8
    assert meta["arch"] == "resnet18" and meta["arch_args"] == {"width": 8}
    assert meta["input_size"] == 48 and meta["crop_scale"] == cfg.crop_scale
    assert meta["normalization"]["kp_mean"] == 24 and meta["normalization"]["kp_std"] == 12
    assert meta["command"] == "python train.py --tiny-test"
    best = min(result["history"], key=lambda r: r["val_nme"])
    assert meta["metrics"]["val_nme"] == best["val_nme"]
    assert meta["metrics"]["epoch"] == best["epoch"]
    assert meta["train_config"]["subset"] == 24
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 136)


def test_best_checkpoint_holds_the_best_epochs_weights(run_a):
    """Evaluating best.pt on the validation frames gives the val NME it records."""
    cfg, _ = run_a
    model, meta = checkpoints.load_model(Path(cfg.out) / "best.pt")
    _, val_dl = loaders.make_loaders(cfg)
    _, val_nme = train.run_epoch(model, val_dl, torch.nn.L1Loss(), kp_std=cfg.kp_std)
    assert val_nme == pytest.approx(meta["metrics"]["val_nme"], rel=1e-5)
    last = torch.load(Path(cfg.out) / "last.pt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 2 and len(last["history"]) == 2


# --------------------------------------------------------------------------------------------
# Reproducibility and resuming
# --------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_numbers(run_a, run_b):
    (cfg_a, a), (cfg_b, b) = run_a, run_b
    assert numbers(a["history"]) == numbers(b["history"])
    assert same_weights(state_dict_of(Path(cfg_a.out) / "last.pt"),
                        state_dict_of(Path(cfg_b.out) / "last.pt"))


def test_different_seed_gives_different_numbers(run_a, tmp_path):
    _, a = run_a
    cfg = TrainConfig(**{**TINY, "epochs": 1}, seed=1, out=str(tmp_path))
    c = train.train(cfg, progress=False)
    first_a, first_c = a["history"][0], c["history"][0]
    assert all(first_a[k] != first_c[k] for k in ["train_loss", "val_loss", "val_nme"])


def test_a_seed_1_models_validation_people_are_read_from_its_checkpoint(tmp_path):
    """A model trained with ``--seed 1`` holds out other people than the default seed 0 would;
    everything that measures on "the validation people" (``evaluate --split val``,
    ``ship.measure_bias``) must use the model's own split, read from its checkpoint."""
    cfg = TrainConfig(**{**TINY, "epochs": 1}, seed=1, out=str(tmp_path))
    train_dl, _ = loaders.make_loaders(TrainConfig(**{**TINY, "subset": None}, seed=1))
    trained_on = {course.person_of(f) for f in train_dl.dataset.filenames}  # all it may use
    train.train(cfg, progress=False)
    meta = checkpoints.load_model(tmp_path / "best.pt")[1]
    _, val_names = course.person_split(meta["train_config"])
    assert val_names and not {course.person_of(f) for f in val_names} & trained_on
    detector = pipeline.KeypointPipeline(tmp_path / "best.pt")
    _, details = evaluate.evaluate(detector, "val", "crop", subset=5, progress=False)
    assert set(details["files"]) <= set(val_names)
    # the defaults (seed 0) would have measured partly on this model's training people
    _, default_val = course.person_split(None)
    assert {course.person_of(f) for f in default_val} & trained_on


def test_resume_continues_exactly(run_a, tmp_path):
    """A run stopped after epoch 1 (time budget) and resumed gives the uninterrupted run's
    numbers. The interruption keeps ``epochs=2``: the cosine schedule's length is part of the
    saved state, so a run started with ``epochs=1`` and resumed with ``epochs=2`` would follow
    the 1-epoch schedule (learning rate 0 in epoch 2) instead."""
    _, a = run_a
    cfg = TrainConfig(**TINY, out=str(tmp_path), max_minutes=1e-9)
    first = train.train(cfg, progress=False)
    assert first["stopped"].startswith("time budget") and len(first["history"]) == 1
    assert len(read_log(tmp_path / "log.csv")) == 1
    cfg = TrainConfig(**TINY, out=str(tmp_path))
    resumed = train.train(cfg, resume=True, progress=False)
    assert len(resumed["history"]) == 2 and resumed["stopped"] == "epochs"
    assert [int(r["epoch"]) for r in read_log(tmp_path / "log.csv")] == [1, 2]
    assert numbers(resumed["history"]) == numbers(a["history"]), (
        "resuming should restore weights, optimizer, schedule and every random state, so "
        "the numbers must equal the uninterrupted run's")
    assert same_weights(state_dict_of(tmp_path / "last.pt"),
                        state_dict_of(Path(run_a[0].out) / "last.pt"))




# --------------------------------------------------------------------------------------------
# Early stopping (run_epoch scripted: the logic, without the cost of real training)
# --------------------------------------------------------------------------------------------
def scripted(val_nmes):
    """A stand-in for train.run_epoch: training passes return fixed numbers, validation
    passes the given val NMEs in turn."""
    values = iter(val_nmes)

    def run_epoch(model, loader, criterion, optimizer=None, **settings):
        if optimizer is not None:
            return 1.0, 0.5
        v = next(values)
        return v, v
    return run_epoch


@pytest.fixture(scope="module")
def tiny_loaders():
    return loaders.make_loaders(TrainConfig(**{**TINY, "subset": 8, "val_subset": 4}))


@pytest.fixture
def scripted_training(monkeypatch, tiny_loaders):
    """train.train with scripted validation NMEs, the loaders made once and no plotting."""
    monkeypatch.setattr(train, "plot_curves", lambda history, path: None)
    monkeypatch.setattr(loaders, "make_loaders", lambda cfg: tiny_loaders)

    def run(val_nmes, resume=False, **cfg):
        monkeypatch.setattr(train, "run_epoch", scripted(val_nmes))
        return train.train(TrainConfig(**{**TINY, "epochs": len(val_nmes), **cfg}),
                           resume=resume, progress=False)
    return run


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
@pytest.mark.parametrize("patience, val_nmes, stop_after, best_epoch", [
    (0, [0.5, 0.4, 0.45, 0.3, 0.2], 3, 2),          # stops at the first epoch without gain
    (2, [0.5, 0.6, 0.4, 0.45, 0.46, 0.3, 0.2], 5, 3),
    (2, [0.5, 0.4, 0.3, 0.2, 0.1], 5, 5),          # always better: runs all epochs
    (0, [0.5, 0.4, 0.3], 3, 3),
])
def test_early_stopping(tmp_path, scripted_training, patience, val_nmes, stop_after,
                        best_epoch):
    result = scripted_training(val_nmes, patience=patience, out=str(tmp_path))
    assert result["epochs"] == stop_after
    early = stop_after < len(val_nmes)
    assert result["stopped"].startswith("early stop") == early, result["stopped"]
    assert result["best_val_nme"] == min(val_nmes[:stop_after])
    _, meta = checkpoints.load_model(tmp_path / "best.pt")
    assert meta["metrics"]["epoch"] == best_epoch
    assert len(read_log(tmp_path / "log.csv")) == stop_after


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_early_stopping_carries_over_a_resume(tmp_path, scripted_training):
    """The best val NME and the epochs without gain before a resume still count after it."""
    first = scripted_training([0.5, 0.6], patience=2, epochs=2, out=str(tmp_path))
    assert first["stopped"] == "epochs"
    result = scripted_training([0.55, 0.1], patience=2, epochs=4, resume=True,
                               out=str(tmp_path))
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3]
    assert result["stopped"].startswith("early stop")
    assert result["best_val_nme"] == 0.5
    _, meta = checkpoints.load_model(tmp_path / "best.pt")
    assert meta["metrics"]["epoch"] == 1


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_resume_without_a_checkpoint_starts_afresh(tmp_path, scripted_training):
    result = scripted_training([0.5], resume=True, out=str(tmp_path))
    assert [r["epoch"] for r in result["history"]] == [1]


# --------------------------------------------------------------------------------------------
# Data split, configuration, the course Net
# --------------------------------------------------------------------------------------------
def test_no_person_in_both_train_and_validation():
    cfg = TrainConfig(input_size=48, workers=0)
    train_dl, val_dl = loaders.make_loaders(cfg)
    train_names, val_names = train_dl.dataset.filenames, val_dl.dataset.filenames
    train_people = {course.person_of(n) for n in train_names}
    val_people = {course.person_of(n) for n in val_names}
    assert train_people and val_people and not train_people & val_people
    all_names = course.dataset("train").filenames
    assert sorted(train_names + val_names) == sorted(all_names)      # every frame used once
    share = len(val_people) / (len(train_people) + len(val_people))
    assert share == pytest.approx(cfg.val_fraction, abs=0.01)
    # the subsets are taken within each side
    small_train, small_val = loaders.make_loaders(TrainConfig(**TINY))
    assert len(small_train.dataset) == 24 and len(small_val.dataset) == 12
    assert set(small_train.dataset.filenames) <= set(train_names)
    assert set(small_val.dataset.filenames) <= set(val_names)


def test_the_course_net_trains(tmp_path):
    # The course Net needs at least 64 px (its fifth block would get a 1x1 map at 48 px).
    cfg = TrainConfig(arch="net", input_size=64, subset=16, val_subset=8, epochs=1,
                      batch_size=8, workers=0, loss="mse", out=str(tmp_path))
    result = train.train(cfg, progress=False)
    assert result["epochs"] == 1 and math.isfinite(result["best_val_nme"])
    model, meta = checkpoints.load_model(tmp_path / "best.pt", expect_arch="net")
    assert isinstance(model, models.Net) and meta["arch_args"] == {"input_size": 64}
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 136)


def test_bad_settings_are_rejected_before_training(tmp_path):
    for bad in ({"loss": "hinge"}, {"optimizer": "lbfgs"}, {"schedule": "linear"}):
        with pytest.raises(ValueError):
            train.train(TrainConfig(**TINY, out=str(tmp_path / "x"), **bad), progress=False)
    assert not (tmp_path / "x").exists()


def test_command_line_becomes_the_config():
    cfg, resume = config.parse_args(["--arch", "net", "--input-size", "64", "--epochs", "3",
                                    "--no-augment", "--lr", "0.01", "--resume", "--subset", "5"],
                                    prog="python train.py")
    assert resume is True
    assert (cfg.arch, cfg.input_size, cfg.epochs, cfg.augment, cfg.lr, cfg.subset) == \
        ("net", 64, 3, False, 0.01, 5)
    assert cfg.command.startswith("python train.py --arch net")
    assert cfg.arch_args() == {"input_size": 64}
    assert (cfg.kp_mean, cfg.kp_std) == (32, 16)
    cfg, resume = config.parse_args([])
    assert resume is False and cfg.arch_args() == {"width": 32}


# --------------------------------------------------------------------------------------------
# Fine-tuning, the heatmap model, augmentation switches
# --------------------------------------------------------------------------------------------
def test_init_starts_from_the_checkpoints_weights(run_a, tmp_path):
    cfg_a, result_a = run_a
    start, _ = checkpoints.load_model(result_a["best"])
    cfg = TrainConfig(**{**TINY, "epochs": 1, "lr": 0.0, "weight_decay": 0.0},
                      init=result_a["best"], out=str(tmp_path))
    result = train.train(cfg, progress=False)
    # with a zero learning rate, the weights are exactly the ones it started from
    # (batch-norm running statistics aside, which training mode updates)
    after = checkpoints.load_model(result["best"])[0].state_dict()
    for name, value in start.state_dict().items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(after[name], value), name
    assert checkpoints.load_model(result["best"])[1]["train_config"]["init"] == result_a["best"]


def test_init_from_another_architecture_is_a_clear_error(run_a, tmp_path):
    _, result_a = run_a
    cfg = TrainConfig(**{**TINY, "width": 16}, init=result_a["best"], out=str(tmp_path))
    with pytest.raises(runtime.ModelLoadError, match="--width"):
        train.train(cfg, progress=False)
    cfg = TrainConfig(**{**TINY, "arch": "net", "input_size": 64}, init=result_a["best"],
                      out=str(tmp_path / "n"))
    with pytest.raises(runtime.ModelLoadError, match="not 'net'"):
        train.train(cfg, progress=False)


def test_init_may_change_the_input_size_and_go_from_grayscale_to_colour(tmp_path):
    # a grayscale heatmap model at 48 px starts a colour one at 64 px (a resolution fine-tune):
    # every weight carries over, the first convolution spread over R, G and B by the gray
    # weights, so that on any photo the colour model computes what the grayscale one computed
    # from its grayscale version
    torch.manual_seed(0)
    gray = nets.HeatmapKeypoints(width=8, input_size=48).eval()
    with torch.no_grad():                       # batch-norm statistics that are not the identity
        for m in gray.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    meta = checkpoints.checkpoint_meta("heatmap", {"width": 8, "input_size": 48}, 48, 1.3, 24,
                                       12, command="tests")
    checkpoints.save_checkpoint(tmp_path / "gray.pt", gray, meta)
    cfg = TrainConfig(arch="heatmap", width=8, input_size=64, color=True,
                      init=str(tmp_path / "gray.pt"))
    color = nets.build_model("heatmap", **cfg.arch_args())
    train.init_from(color, cfg)
    color.eval()
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    at_64 = nets.HeatmapKeypoints(width=8, input_size=64).eval()
    at_64.load_state_dict(gray.state_dict())   # the grayscale weights at 64 px
    with torch.no_grad():
        a = color(torch.from_numpy(images.unit_image(rgb, gray=False)).permute(2, 0, 1)[None])
        b = at_64(torch.from_numpy(images.unit_image(rgb))[None, None])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # a regressor's weights depend on the input size: refused, with what to pass
    checkpoints.save_checkpoint(tmp_path / "r.pt", nets.ResNet18Keypoints(width=8),
                                checkpoints.checkpoint_meta("resnet18", {"width": 8}, 48, 1.3, 24,
                                                            12, command="tests"))
    cfg = TrainConfig(arch="resnet18", width=8, input_size=64, init=str(tmp_path / "r.pt"))
    with pytest.raises(runtime.ModelLoadError, match="--input-size"):
        train.init_from(nets.build_model("resnet18", width=8), cfg)


def test_the_heatmap_model_trains_and_learns(tmp_path):
    cfg = TrainConfig(arch="heatmap", width=8, input_size=48, subset=24, val_subset=12,
                      epochs=3, batch_size=8, workers=0, lr=3e-3, augment=False,
                      out=str(tmp_path))
    result = train.train(cfg, progress=False)
    losses = [h["train_loss"] for h in result["history"]]
    assert losses[-1] < losses[0]
    model, meta = checkpoints.load_model(tmp_path / "best.pt", expect_arch="heatmap")
    assert meta["arch_args"] == {"width": 8, "input_size": 48}
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 136)


def test_command_line_augmentation_and_init_options():
    cfg, _ = config.parse_args(["--flip", "0", "--degrade", "0.25", "--jitter-scale", "0.2",
                               "--jitter-shift", "0.1", "--init", "x.pt", "--arch", "heatmap"])
    assert (cfg.flip, cfg.degrade, cfg.jitter_scale, cfg.jitter_shift, cfg.init) == \
        (0.0, 0.25, 0.2, 0.1, "x.pt")
    assert cfg.arch_args() == {"width": 32, "input_size": 112}


@needs_300w
def test_extra_data_300w_adds_only_its_training_part(tmp_path):
    cfg = TrainConfig(**TINY, extra_data="300w", out=str(tmp_path))
    train_dl, val_dl = loaders.make_loaders(cfg)
    course_part, extra = train_dl.dataset.datasets
    _, held = w300.split_300w_files()
    assert len(course_part) == 24 and len(extra) + len(held) == len(w300.dataset_300w())
    assert not set(extra.filenames) & set(held)
    assert val_dl.dataset.filenames[0] in course.dataset("train").filenames
    sample = extra[0]
    assert sample["image"].shape == (1, 48, 48) and sample["keypoints"].shape == (68, 2)
    with pytest.raises(ValueError, match="extra-data"):
        loaders.make_loaders(TrainConfig(**TINY, extra_data="afw", out=str(tmp_path)))


def test_experiments_table_has_one_row_per_setting_with_its_seeds(tmp_path):
    base = TrainConfig(**{**TINY, "epochs": 1, "subset": 16, "val_subset": 8})
    rows = [("baseline", {}), ("loss L1", {"loss": "l1"})]
    table = experiments.run_experiments(base, tmp_path, rows=rows, seeds=(0, 1))
    assert list(table.experiment) == ["baseline", "loss L1"]
    for _, row in table.iterrows():
        per_seed = [float(v) for v in row["per_seed_%"].split(" / ")]
        assert len(per_seed) == 2 and per_seed[0] != per_seed[1]   # two real runs
        assert row["val_nme_%"] == pytest.approx(np.mean(per_seed), abs=0.01)
        assert row["spread_%"] == pytest.approx(np.std(per_seed), abs=0.01)
    assert (tmp_path / "experiments.csv").is_file()
    assert sorted(p.name for p in (tmp_path / "baseline").iterdir()) == ["seed0", "seed1"]


def test_every_experiment_of_notebook_2_is_a_valid_run():
    """Each row of the experiments grid changes settings that exist, to values train.py
    accepts (checked without training)."""
    base = experiments.base_config(subset=16, epochs=3)
    assert (base.arch, base.pipeline, base.augment, base.loss) == ("net", "face", True, "mse")
    names = [name for name, _ in experiments.grid(3)]
    assert names[0] == "baseline" and len(set(names)) == len(names)
    for name, overrides in experiments.grid(3):
        cfg = TrainConfig(**{**base.__dict__, **overrides})
        cfg.check()
        assert cfg.arch in nets.ARCHITECTURES, name
        changed = {k for k in overrides if getattr(base, k) != overrides[k]}
        assert changed == set(overrides), name           # every override changes something
        assert len(changed) == (name != "baseline") or name.startswith(
            ("optimiser SGD", "course transforms", "previous recipe")), name
    assert dict(experiments.grid(3))["epochs x2 (6)"] == {"epochs": 6}
