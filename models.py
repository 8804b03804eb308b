"""The networks that predict 68 facial keypoints, and their self-describing checkpoints.

* ``Net``: the course CNN (square grayscale input, 224 px by default).
* ``ResNet18Keypoints``: torchvision's ResNet-18 layout with a one-channel stem and a
  136-output head; ``width`` scales its channels (64 is torchvision's ``resnet18`` exactly).
* ``HeatmapKeypoints``: a ResNet-18 encoder with a stride-4 decoder predicting 68 heatmaps,
  decoded to sub-pixel coordinates by soft-argmax (integral regression).

A checkpoint (``save_checkpoint``/``load_model``) holds the weights together with everything
needed to use them: architecture name and arguments, input size, the face-crop rule, the image
and keypoint normalisation, the command that trained it and its measured metrics.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock, ResNet

from landmarks import N_KEYPOINTS
from utils import atomic_torch_save, first_line

CHECKPOINT_FORMAT = 1
#: The shipped model.
DEFAULT_MODEL = Path(__file__).resolve().parent / "saved_models" / "keypoints_resnet18.pt"
N_OUTPUTS = 2 * N_KEYPOINTS  # (x, y) of each keypoint


class Net(nn.Module):
    """The course CNN: five conv blocks (conv, batch-norm, ReLU, 2x2 max-pool), two dense layers.

    Shapes for the default 224-px input (batch dimension left out)::

        input                       1 x 224 x 224
        conv1 5x5, 32   -> pool     32 x 110 x 110   (224-4=220, /2)
        conv2 3x3, 64   -> pool     64 x 54 x 54     (110-2=108, /2)
        conv3 3x3, 128  -> pool    128 x 26 x 26     (54-2=52, /2)
        conv4 3x3, 256  -> pool    256 x 12 x 12     (26-2=24, /2)
        conv5 1x1, 256  -> pool    256 x 6 x 6       (12, /2)
        flatten                     9216
        fc1 + ReLU + dropout 0.4    512
        fc2                         136              (68 x, y pairs)

    Dropout grows with depth (0.1 after conv1 up to 0.3 after conv5) against overfitting.
    """

    def __init__(self, input_size=224, num_outputs=N_OUTPUTS):
        super().__init__()
        if input_size < 64:
            raise ValueError(f"Net needs an input of at least 64 px (five 2x2 poolings), got "
                             f"{input_size}")
        self.input_size = input_size
        chans = [1, 32, 64, 128, 256, 256]
        kernels = [5, 3, 3, 3, 1]
        drops = [0.1, 0.1, 0.2, 0.2, 0.3]
        self.features = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], kernels[i]),
                          nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True),
                          nn.MaxPool2d(2), nn.Dropout(drops[i]))
            for i in range(5)])
        with torch.no_grad():
            n_flat = self.features(torch.zeros(1, 1, input_size, input_size)).numel()
        self.fc1 = nn.Linear(n_flat, 512)
        self.fc1_drop = nn.Dropout(0.4)
        self.fc2 = nn.Linear(512, num_outputs)

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(x, 1)
        x = self.fc1_drop(F.relu(self.fc1(x)))
        return self.fc2(x)

    def shape_walkthrough(self):
        """Each stage's output shape for one input image, as printable lines."""
        lines = []
        x = torch.zeros(1, 1, self.input_size, self.input_size)
        lines.append(f"{'input':<10}{tuple(x.shape[1:])}")
        was_training = self.training
        self.eval()
        with torch.no_grad():
            for i, block in enumerate(self.features, 1):
                x = block(x)
                lines.append(f"{'conv' + str(i):<10}{tuple(x.shape[1:])}")
            x = torch.flatten(x, 1)
            lines.append(f"{'flatten':<10}{tuple(x.shape[1:])}")
            x = self.fc1(x)
            lines.append(f"{'fc1':<10}{tuple(x.shape[1:])}")
            x = self.fc2(x)
            lines.append(f"{'fc2':<10}{tuple(x.shape[1:])}")
        self.train(was_training)
        return lines


class ResNet18Keypoints(ResNet):
    """ResNet-18 (torchvision's BasicBlock layout, 2-2-2-2) regressing 136 coordinates.

    ``in_channels=1`` for grayscale input; ``width`` is the first stage's channel count, the
    later stages doubling it (64 gives torchvision's ``resnet18``). Works at any input size.
    """

    def __init__(self, width=64, in_channels=1, num_outputs=N_OUTPUTS):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_outputs)
        self.width, self.in_channels = width, in_channels
        if width != 64:  # rebuild the stages at this width
            self.inplanes = width
            self.bn1 = nn.BatchNorm2d(width)
            self.layer1 = self._make_layer(BasicBlock, width, 2)
            self.layer2 = self._make_layer(BasicBlock, width * 2, 2, stride=2)
            self.layer3 = self._make_layer(BasicBlock, width * 4, 2, stride=2)
            self.layer4 = self._make_layer(BasicBlock, width * 8, 2, stride=2)
            self.fc = nn.Linear(width * 8, num_outputs)
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class HeatmapKeypoints(nn.Module):
    """68 heatmaps at a quarter of the input resolution, decoded to sub-pixel coordinates.

    Encoder: the first three stages of ``ResNet18Keypoints(width)`` (stride 16). Decoder: two
    4x4 transposed convolutions (stride 2 each, ``head`` channels) back to stride 4, then a 1x1
    convolution to 68 heatmaps (28 x 28 for a 112-px input). Decoding is integral regression
    (soft-argmax): the expected (x, y) under each heatmap's softmax, so ``forward`` returns 136
    coordinates, normalised like the regressors' (``(px - kp_mean) / kp_std``), and the model
    trains and runs wherever they do. ``forward_heatmaps`` also returns the heatmaps (logits),
    which ``train.py`` supervises with Gaussian targets (``heatmap_targets``, ``sigma`` in input
    pixels: 6 px is 1.5 heatmap cells, wide enough for the expectation to stay sub-pixel), and
    ``confidence`` the mean peak probability per face, low for a poor fit.
    """

    STRIDE = 4

    def __init__(self, width=32, head=64, input_size=112, sigma=6.0, in_channels=1):
        super().__init__()
        if input_size % 16:
            raise ValueError(f"HeatmapKeypoints needs an input size divisible by 16, "
                             f"got {input_size}")
        self.width, self.head, self.input_size, self.sigma = width, head, input_size, sigma
        trunk = ResNet18Keypoints(width=width, in_channels=in_channels)
        self.encoder = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool,
                                     trunk.layer1, trunk.layer2, trunk.layer3)

        def up(cin, cout):
            return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.decoder = nn.Sequential(*up(width * 4, head), *up(head, head),
                                     nn.Conv2d(head, N_OUTPUTS // 2, 1))
        n = input_size // self.STRIDE
        # centre of heatmap cell j in input pixels (pixel-index convention, as the labels)
        centres = torch.arange(n, dtype=torch.float32) * self.STRIDE + (self.STRIDE - 1) / 2
        self.register_buffer("centres", centres, persistent=False)
        self.kp_mean, self.kp_std = input_size / 2, input_size / 4

    def forward_heatmaps(self, x):
        logits = self.decoder(self.encoder(x))                     # (N, 68, n, n)
        prob = logits.flatten(2).softmax(-1).view_as(logits)
        px = (prob.sum(2) * self.centres).sum(-1)                  # expected x, in pixels
        py = (prob.sum(3) * self.centres).sum(-1)
        coords = torch.stack([px, py], -1)
        return logits, ((coords - self.kp_mean) / self.kp_std).flatten(1)

    def forward(self, x):
        return self.forward_heatmaps(x)[1]

    def heatmap_targets(self, keypoints):
        """Gaussian targets (N, 68, n, n), each summing to 1, for normalised keypoints (N, 136)."""
        pts = keypoints.view(len(keypoints), -1, 2) * self.kp_std + self.kp_mean
        gx = torch.exp(-(self.centres[None, None] - pts[..., :1]) ** 2 / (2 * self.sigma ** 2))
        gy = torch.exp(-(self.centres[None, None] - pts[..., 1:]) ** 2 / (2 * self.sigma ** 2))
        maps = gy[..., :, None] * gx[..., None, :]
        return maps / maps.sum((-2, -1), keepdim=True).clamp_min(1e-12)

    def heatmap_loss(self, logits, keypoints):
        """Cross-entropy between each heatmap's softmax and its Gaussian target."""
        target = self.heatmap_targets(keypoints).flatten(2)
        return -(target * logits.flatten(2).log_softmax(-1)).sum(-1).mean()

    @torch.no_grad()
    def confidence(self, x):
        """Per face, the mean over keypoints of the peak softmax probability (in [0, 1])."""
        logits, _ = self.forward_heatmaps(x)
        return logits.flatten(2).softmax(-1).amax(-1).mean(-1)


#: Architecture names as stored in checkpoints.
ARCHITECTURES = {"net": Net, "resnet18": ResNet18Keypoints, "heatmap": HeatmapKeypoints}


def build_model(arch, **arch_args):
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**arch_args)


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
class ModelLoadError(ValueError):
    """A weights file that cannot be used; the message says what to do."""


def checkpoint_meta(arch, arch_args, input_size, crop_scale, kp_mean, kp_std, command=None,
                    metrics=None, **extra):
    """The description stored with the weights."""
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "arch_args": dict(arch_args),
        "input_size": int(input_size),
        "crop_scale": float(crop_scale),
        "normalization": {"image": "grayscale, pixel / 255",
                          "kp_mean": float(kp_mean), "kp_std": float(kp_std)},
        "keypoints": N_KEYPOINTS,
        "command": command or " ".join(sys.argv),
        "metrics": dict(metrics or {}),
        **extra,
    }


def save_checkpoint(path, model, meta):
    """Save the weights and their description atomically."""
    atomic_torch_save({**meta, "state_dict": model.state_dict()}, path)


def read_checkpoint(path) -> dict:
    """Read a checkpoint file and check it; raise ``ModelLoadError`` with advice otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such weights file. Train one with `python train.py` "
                             f"or pass --model with the path of a checkpoint.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged file
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                             f"{first_line(e)}). The file may be damaged or "
                             f"incomplete: copy or train it again.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "arch" not in ckpt:
        raise ModelLoadError(f"{path}: a bare state dict or an unknown format, with no "
                             f"description of its architecture. Only checkpoints written by "
                             f"this project's train.py (format {CHECKPOINT_FORMAT}) can be "
                             f"loaded; to use bare weights, load them into the model they were "
                             f"trained as and save it with models.save_checkpoint(path, model, "
                             f"models.checkpoint_meta(...)).")
    if not isinstance(ckpt.get("format", 0), int) or ckpt.get("format", 0) > CHECKPOINT_FORMAT:
        raise ModelLoadError(f"{path}: checkpoint format {ckpt['format']!r} is newer than this "
                             f"code reads ({CHECKPOINT_FORMAT}); update the project.")
    norm = ckpt.get("normalization")
    try:
        usable = (int(ckpt["input_size"]) > 0 and isinstance(norm, dict)
                  and float(norm["kp_std"]) > 0 and float(norm["kp_mean"]) == norm["kp_mean"])
    except (KeyError, TypeError, ValueError):
        usable = False
    if not usable:
        raise ModelLoadError(f"{path}: an older or damaged checkpoint format: its description "
                             f"lacks a valid input size or keypoint normalisation, so its "
                             f"predictions could not be mapped back onto an image. Save it "
                             f"again with models.save_checkpoint (see train.py) or retrain it.")
    return ckpt


def load_model(path, expect_arch=None):
    """Build the model described by a checkpoint and load its weights.

    Returns ``(model in eval mode, meta)``; ``meta`` is the checkpoint without the weights.
    With ``expect_arch``, a checkpoint of another architecture is an error.
    """
    ckpt = read_checkpoint(path)
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    if expect_arch is not None and meta["arch"] != expect_arch:
        raise ModelLoadError(f"{path}: holds a {meta['arch']!r} model, not {expect_arch!r}")
    try:
        model = build_model(meta["arch"], **meta.get("arch_args", {}))
    except (ValueError, TypeError) as e:
        raise ModelLoadError(f"{path}: {e}") from None
    load_weights(model, ckpt["state_dict"], path)
    model.eval()
    return model, meta


def load_weights(model, state_dict, source="weights"):
    """``load_state_dict`` with a clear message when the weights belong to another model."""
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as e:  # wrong shapes, not a dict
        first = str(e).splitlines()
        detail = "; ".join(line.strip() for line in first[1:3] or first[:1])
        raise ModelLoadError(f"{source}: these weights do not fit a {type(model).__name__} "
                             f"with these arguments (another architecture or input size?): "
                             f"{detail[:300]}") from None
