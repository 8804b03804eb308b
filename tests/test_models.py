"""Tests of models: the networks' shapes and sizes, and the self-describing checkpoints."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn
import torchvision

from facial_keypoints.keypoints import checkpoints, nets
from facial_keypoints.keypoints.nets import ResNet18Keypoints
from facial_keypoints.keypoints.runtime import ModelLoadError
from models import Net


def _meta(arch, arch_args, input_size, **extra):
    return checkpoints.checkpoint_meta(arch, arch_args, input_size, crop_scale=1.3,
                                  kp_mean=input_size / 2, kp_std=input_size / 4, **extra)


@pytest.fixture
def small_resnet():
    torch.manual_seed(0)
    return ResNet18Keypoints(width=8).eval()


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------
def test_net_224_gives_136_outputs():
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 224, 224))
    assert out.shape == (2, 136) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert net.fc1.in_features == 256 * 6 * 6  # the documented 9216


def test_net_other_input_size():
    net = Net(input_size=96).eval()
    with torch.no_grad():
        assert net(torch.rand(3, 1, 96, 96)).shape == (3, 136)
    with pytest.raises(RuntimeError):
        net(torch.rand(1, 1, 224, 224))  # sized for 96 px: a clear shape error, not silence


def test_net_shape_walkthrough():
    net = Net()
    net.train()
    lines = net.shape_walkthrough()
    assert net.training  # the walkthrough leaves the mode as it was
    assert lines[0].startswith("input") and lines[0].endswith("(1, 224, 224)")
    assert lines[1].endswith("(32, 110, 110)") and lines[5].endswith("(256, 6, 6)")
    assert lines[-1].startswith("fc2") and lines[-1].endswith("(136,)")
    assert any(line.endswith("(9216,)") for line in lines)
    assert Net(input_size=96).shape_walkthrough()[-1].endswith("(136,)")


def test_resnet18_width64_has_torchvision_resnet18_parameter_count():
    reference = torchvision.models.resnet18(num_classes=136)
    reference.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    expected = sum(p.numel() for p in reference.parameters())
    ours = ResNet18Keypoints(width=64)
    assert nets.count_parameters(ours) == expected
    assert ours.conv1.in_channels == 1 and ours.fc.out_features == 136
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in reference.state_dict().items()}


@pytest.mark.parametrize("size", [64, 112])
def test_resnet18_small_width_any_size(size):
    net = ResNet18Keypoints(width=16).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 1, size, size)).shape == (2, 136)
    assert net.layer4[0].conv1.out_channels == 128 and net.fc.in_features == 128
    assert nets.count_parameters(net) < nets.count_parameters(ResNet18Keypoints(width=32))


def _dropouts(model):
    return [d.p for d in model.modules() if isinstance(d, nn.Dropout) and d.p > 0]


def _norms(model):
    return [b for b in model.modules() if isinstance(b, nn.BatchNorm2d)]


def test_net_variants_of_notebook_2():
    dropouts, norms = _dropouts, _norms
    plain = Net(input_size=96)
    assert dropouts(plain) == [] and len(norms(plain)) == 5
    with_dropout = nets.build_model("net-dropout", input_size=96)
    assert isinstance(with_dropout, Net)
    assert dropouts(with_dropout) == [0.1, 0.1, 0.2, 0.2, 0.3, 0.4]
    without_norm = nets.build_model("net-no-batchnorm", input_size=96)
    assert norms(without_norm) == [] and dropouts(without_norm) == []
    # the same weights in every variant: a checkpoint of one loads into another's layout
    assert plain.state_dict().keys() == with_dropout.state_dict().keys()
    for model in (plain, with_dropout, without_norm):
        with torch.no_grad():
            assert model.eval()(torch.rand(2, 1, 96, 96)).shape == (2, 136)


def test_build_model():
    assert isinstance(nets.build_model("resnet18", width=8), ResNet18Keypoints)
    assert isinstance(nets.build_model("net", input_size=64), Net)
    with pytest.raises(ValueError, match="unknown architecture"):
        nets.build_model("vgg")


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def test_checkpoint_round_trip_resnet(tmp_path, small_resnet):
    path = tmp_path / "m.pt"
    meta = _meta("resnet18", {"width": 8}, 64, command="python train.py --width 8",
                 metrics={"test_nme": 0.061, "epochs": 3})
    checkpoints.save_checkpoint(path, small_resnet, meta)
    loaded, got = checkpoints.load_model(path, expect_arch="resnet18")
    assert not loaded.training
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), small_resnet(x))
    assert got["arch"] == "resnet18" and got["arch_args"] == {"width": 8}
    assert got["input_size"] == 64 and got["crop_scale"] == 1.3
    assert got["normalization"]["kp_mean"] == 32.0 and got["normalization"]["kp_std"] == 16.0
    assert got["command"] == "python train.py --width 8"
    assert got["metrics"] == {"test_nme": 0.061, "epochs": 3}
    assert got["format"] == checkpoints.CHECKPOINT_FORMAT and "state_dict" not in got


def test_checkpoint_round_trip_net(tmp_path):
    torch.manual_seed(1)
    net = Net(input_size=64).eval()
    checkpoints.save_checkpoint(tmp_path / "n.pt", net, _meta("net", {"input_size": 64}, 64))
    loaded, meta = checkpoints.load_model(tmp_path / "n.pt")
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert isinstance(loaded, Net) and meta["arch"] == "net"


def test_load_model_wrong_arch(tmp_path, small_resnet):
    checkpoints.save_checkpoint(tmp_path / "m.pt", small_resnet,
                                _meta("resnet18", {"width": 8}, 64))
    with pytest.raises(ModelLoadError, match=r"'resnet18'.*not 'net'"):
        checkpoints.load_model(tmp_path / "m.pt", expect_arch="net")


def test_arch_args_that_do_not_fit_the_weights(tmp_path, small_resnet):
    checkpoints.save_checkpoint(tmp_path / "m.pt", small_resnet,
                                _meta("resnet18", {"width": 16}, 64))
    with pytest.raises(ModelLoadError, match="do not fit"):
        checkpoints.load_model(tmp_path / "m.pt")
    net = Net(input_size=64)
    checkpoints.save_checkpoint(tmp_path / "n.pt", net, _meta("net", {"input_size": 96}, 96))
    with pytest.raises(ModelLoadError, match="do not fit"):
        checkpoints.load_model(tmp_path / "n.pt")


def test_unknown_arch_or_arguments(tmp_path, small_resnet):
    checkpoints.save_checkpoint(tmp_path / "a.pt", small_resnet, _meta("vgg", {}, 64))
    with pytest.raises(ModelLoadError, match="unknown architecture"):
        checkpoints.load_model(tmp_path / "a.pt")
    checkpoints.save_checkpoint(tmp_path / "b.pt", small_resnet,
                           _meta("resnet18", {"width": 8, "depth": 50}, 64))
    with pytest.raises(ModelLoadError, match="depth"):
        checkpoints.load_model(tmp_path / "b.pt")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_checkpoint(tmp_path, small_resnet, damage):
    path = tmp_path / "m.pt"
    checkpoints.save_checkpoint(path, small_resnet, _meta("resnet18", {"width": 8}, 64))
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint " * 9,
                      "empty": b""}[damage])
    with pytest.raises(ModelLoadError, match="not a readable PyTorch checkpoint"):
        checkpoints.load_model(path)


def test_missing_checkpoint_says_how_to_get_one(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no such weights file\. Pass --model with the path"):
        checkpoints.load_model(tmp_path / "nope.pt")


def test_bare_state_dict_is_refused(tmp_path, small_resnet):
    torch.save(small_resnet.state_dict(), tmp_path / "old.pt")
    with pytest.raises(ModelLoadError, match="bare state dict"):
        checkpoints.load_model(tmp_path / "old.pt")


def test_newer_format_is_refused(tmp_path, small_resnet):
    meta = {**_meta("resnet18", {"width": 8}, 64), "format": checkpoints.CHECKPOINT_FORMAT + 1}
    checkpoints.save_checkpoint(tmp_path / "m.pt", small_resnet, meta)
    with pytest.raises(ModelLoadError, match="newer"):
        checkpoints.load_model(tmp_path / "m.pt")


def test_checkpoint_needs_no_pickled_code(tmp_path, small_resnet):
    """Checkpoints load with weights_only=True: plain containers and tensors only."""
    checkpoints.save_checkpoint(tmp_path / "m.pt", small_resnet,
                                _meta("resnet18", {"width": 8}, 64))
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert ckpt["arch"] == "resnet18" and "conv1.weight" in ckpt["state_dict"]


def test_atomic_save_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "m.pt"
    checkpoints.atomic_torch_save({"a": torch.ones(3)}, path)
    checkpoints.atomic_torch_save({"a": torch.zeros(3)}, path)  # overwrite
    assert os.listdir(path.parent) == ["m.pt"]
    assert torch.equal(torch.load(path)["a"], torch.zeros(3))


def test_atomic_save_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    checkpoints.atomic_torch_save({"a": torch.arange(4)}, path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.atomic_torch_save({"a": torch.zeros(4)}, path)
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(checkpoints.torch, "save",
                            lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        checkpoints.atomic_torch_save({"a": torch.zeros(4)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.pt"]
    assert torch.equal(torch.load(path)["a"], torch.arange(4))


# --------------------------------------------------------------------------------------------
# The heatmap model
# --------------------------------------------------------------------------------------------
@pytest.fixture
def small_heatmap():
    torch.manual_seed(0)
    return nets.HeatmapKeypoints(width=8, input_size=64).eval()


def test_heatmap_model_shapes(small_heatmap):
    x = torch.rand(3, 1, 64, 64)
    logits, coords = small_heatmap.forward_heatmaps(x)
    assert logits.shape == (3, 68, 16, 16) and coords.shape == (3, 136)
    assert torch.equal(small_heatmap(x), coords)
    with pytest.raises(ValueError, match="divisible by 16"):
        nets.HeatmapKeypoints(width=8, input_size=100)


def test_heatmap_targets_decode_back_to_their_keypoints(small_heatmap):
    """A Gaussian target, taken as the logits' log, decodes to its own keypoint (sub-pixel)
    away from the border; each target sums to 1 and peaks at the nearest cell."""
    m = small_heatmap
    torch.manual_seed(1)
    kp = (torch.rand(2, 68, 2) * 24 + 20 - m.kp_mean) / m.kp_std      # 20..44 px of 64
    target = m.heatmap_targets(kp.flatten(1))
    assert torch.allclose(target.sum((-2, -1)), torch.ones(2, 68))
    px = (target.sum(2) * m.centres).sum(-1)       # the expectation soft-argmax computes
    py = (target.sum(3) * m.centres).sum(-1)
    got = (torch.stack([px, py], -1) - m.kp_mean) / m.kp_std
    assert (got - kp).abs().max() * m.kp_std < 0.05                 # pixels
    peak = target.flatten(2).argmax(-1)
    pix = kp * m.kp_std + m.kp_mean
    cell = ((pix - (m.STRIDE - 1) / 2) / m.STRIDE).round().long()
    assert torch.equal(peak, cell[..., 1] * 16 + cell[..., 0])


def test_heatmap_loss_is_lowest_for_the_right_keypoints(small_heatmap):
    m = small_heatmap
    kp = torch.zeros(1, 136)
    right = torch.log(m.heatmap_targets(kp).clamp_min(1e-12)) * 5
    wrong = torch.log(m.heatmap_targets(kp + 0.5).clamp_min(1e-12)) * 5
    assert m.heatmap_loss(right, kp) < m.heatmap_loss(wrong, kp)


def test_heatmap_confidence_is_a_probability(small_heatmap):
    conf = small_heatmap.confidence(torch.rand(2, 1, 64, 64))
    assert conf.shape == (2,) and ((conf > 0) & (conf <= 1)).all()


def test_heatmap_checkpoint_round_trip(tmp_path, small_heatmap):
    path = tmp_path / "h.pt"
    meta = _meta("heatmap", {"width": 8, "input_size": 64}, 64)
    checkpoints.save_checkpoint(path, small_heatmap, meta)
    loaded, meta = checkpoints.load_model(path, expect_arch="heatmap")
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), small_heatmap(x))
