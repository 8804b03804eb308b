"""The networks that predict 68 facial keypoints (PyTorch).

* ``ResNet18Keypoints``: torchvision's ResNet-18 layout with a one-channel stem and a
  136-output head; ``width`` scales its channels (64 is torchvision's ``resnet18`` exactly).
* ``HeatmapKeypoints``: a ResNet-18 encoder with a stride-4 decoder predicting 68 heatmaps,
  decoded to sub-pixel coordinates by soft-argmax (integral regression).
* ``PIPKeypoints``: a ResNet-18 encoder with PIPNet's head: a score per cell of a stride-16
  grid and offsets within the cell.

The last three can have one output head per mark-up (``heads``; ``MarkupHeads``).

The course's own CNN, ``Net``, is the course's: top-level ``models.py``. Checkpoints are
``keypoints.checkpoints``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock, ResNet

from facial_keypoints.landmarks import N_KEYPOINTS

N_OUTPUTS = 2 * N_KEYPOINTS  # (x, y) of each keypoint


class MarkupHeads:
    """What the keypoint models below share: ``heads`` output heads, one per mark-up (the
    course's and 300-W's label the jaw and nose differently), on one backbone.

    ``forward_train(x)`` returns a dict whose ``"coords"`` are (N, heads, 136) normalised
    coordinates (plus what ``aux_loss`` needs); ``forward(x)`` the coordinates alone, (N, 136)
    for a one-headed model and (N, heads, 136) otherwise; ``predict(x)`` the coordinates and a
    per-face confidence (N, heads) in [0, 1], NaN for a model that has none.
    """

    heads = 1
    #: weight of ``aux_loss`` beside the coordinate loss, unless training says otherwise
    AUX_WEIGHT = 0.0

    def forward(self, x):
        coords = self.forward_train(x)["coords"]
        return coords[:, 0] if self.heads == 1 else coords

    def predict(self, x):
        out = self.forward_train(x)
        return out["coords"], self.confidence_of(out)

    def confidence_of(self, out):
        return out["coords"][..., 0] * float("nan")

    def aux_loss(self, out, targets, head):
        """An extra loss for faces whose own mark-up is ``head`` (N,); 0 for a regressor."""
        return out["coords"].new_zeros(())


def _resnet_trunk(width, in_channels, stages=3):
    """The first ``stages`` stages of ``ResNet18Keypoints(width)``: stride 4 * 2**(stages-1)."""
    trunk = ResNet18Keypoints(width=width, in_channels=in_channels)
    layers = [trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4][:stages]
    return nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, *layers)


class ResNet18Keypoints(MarkupHeads, ResNet):
    """ResNet-18 (torchvision's BasicBlock layout, 2-2-2-2) regressing 136 coordinates.

    ``in_channels=1`` for grayscale input; ``width`` is the first stage's channel count, the
    later stages doubling it (64 gives torchvision's ``resnet18``). Works at any input size.
    ``heads``: one 136-output layer per mark-up.
    """

    def __init__(self, width=64, in_channels=1, num_outputs=N_OUTPUTS, heads=1):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_outputs * heads)
        self.width, self.in_channels, self.heads = width, in_channels, heads
        if width != 64:  # rebuild the stages at this width
            self.inplanes = width
            self.bn1 = nn.BatchNorm2d(width)
            self.layer1 = self._make_layer(BasicBlock, width, 2)
            self.layer2 = self._make_layer(BasicBlock, width * 2, 2, stride=2)
            self.layer3 = self._make_layer(BasicBlock, width * 4, 2, stride=2)
            self.layer4 = self._make_layer(BasicBlock, width * 8, 2, stride=2)
            self.fc = nn.Linear(width * 8, num_outputs * heads)
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_train(self, x):
        return {"coords": self._forward_impl(x).unflatten(1, (self.heads, -1))}


class HeatmapKeypoints(MarkupHeads, nn.Module):
    """68 heatmaps at a quarter of the input resolution, decoded to sub-pixel coordinates.

    Encoder: the first three stages of ``ResNet18Keypoints(width)`` (stride 16). Decoder: two
    4x4 transposed convolutions (stride 2 each, ``head`` channels) back to stride 4, then a 1x1
    convolution to 68 heatmaps per mark-up head (28 x 28 for a 112-px input). Decoding is
    integral regression (soft-argmax): the expected (x, y) under each heatmap's softmax, so the
    model returns coordinates normalised like the regressors' (``(px - kp_mean) / kp_std``)
    and trains and runs wherever they do. ``aux_loss`` supervises the heatmaps (logits) with
    Gaussian targets (``heatmap_targets``, ``sigma`` in input pixels: 6 px is 1.5 heatmap
    cells, wide enough for the expectation to stay sub-pixel); the confidence is the mean peak
    probability, low for a poor fit.
    """

    STRIDE = 4
    AUX_WEIGHT = 0.01

    def __init__(self, width=32, head=64, input_size=112, sigma=6.0, in_channels=1, heads=1):
        super().__init__()
        if input_size % 16:
            raise ValueError(f"HeatmapKeypoints needs an input size divisible by 16, "
                             f"got {input_size}")
        self.width, self.head, self.input_size, self.sigma = width, head, input_size, sigma
        self.heads = heads
        self.encoder = _resnet_trunk(width, in_channels)

        def up(cin, cout):
            return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.decoder = nn.Sequential(*up(width * 4, head), *up(head, head),
                                     nn.Conv2d(head, N_KEYPOINTS * heads, 1))
        n = input_size // self.STRIDE
        # centre of heatmap cell j in input pixels (pixel-index convention, as the labels)
        centres = torch.arange(n, dtype=torch.float32) * self.STRIDE + (self.STRIDE - 1) / 2
        self.register_buffer("centres", centres, persistent=False)
        self.kp_mean, self.kp_std = input_size / 2, input_size / 4

    def forward_train(self, x):
        logits = self.decoder(self.encoder(x))                     # (N, H * 68, n, n)
        logits = logits.unflatten(1, (self.heads, N_KEYPOINTS))
        prob = logits.flatten(3).softmax(-1).view_as(logits)
        px = (prob.sum(3) * self.centres).sum(-1)                  # expected x, in pixels
        py = (prob.sum(4) * self.centres).sum(-1)
        coords = torch.stack([px, py], -1)
        return {"coords": ((coords - self.kp_mean) / self.kp_std).flatten(2), "logits": logits}

    def forward_heatmaps(self, x):
        """(logits (N, 68, n, n), coordinates (N, 136)) of the first head."""
        out = self.forward_train(x)
        return out["logits"][:, 0], out["coords"][:, 0]

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

    def aux_loss(self, out, targets, head):
        return self.heatmap_loss(out["logits"][torch.arange(len(head)), head], targets)

    def confidence_of(self, out):
        return out["logits"].flatten(3).softmax(-1).amax(-1).mean(-1)

    @torch.no_grad()
    def confidence(self, x):
        """Per face, the mean over keypoints of the peak softmax probability (in [0, 1])."""
        return self.confidence_of(self.forward_train(x))[:, 0]


class PIPKeypoints(MarkupHeads, nn.Module):
    """Heatmap plus local offsets on a coarse grid: the shape of PIPNet's head (Jin, Liao and
    Shao, "Pixel-in-Pixel Net", IJCV 2021), without its neighbour regression.

    Trunk: the first three stages of ``ResNet18Keypoints(width)``, stride 16 (an 8 x 8 grid for
    a 128-px input). Per mark-up head, one 1x1 convolution gives each of the 68 points a score
    per grid cell and an (x, y) offset, in cells, from that cell's centre. A point is the
    best-scored cell's centre plus its offsets. ``aux_loss`` trains the scores with
    cross-entropy towards the cell that holds the point, and the offsets there with L1; the
    confidence is the mean over points of the best cell's softmax probability.
    """

    STRIDE = 16
    AUX_WEIGHT = 1.0

    def __init__(self, width=32, input_size=128, in_channels=1, heads=1, offset_weight=5.0):
        super().__init__()
        if input_size % self.STRIDE:
            raise ValueError(f"PIPKeypoints needs an input size divisible by {self.STRIDE}, "
                             f"got {input_size}")
        self.width, self.input_size, self.heads = width, input_size, heads
        self.offset_weight = offset_weight
        self.grid = input_size // self.STRIDE
        self.encoder = _resnet_trunk(width, in_channels)
        self.head = nn.Conv2d(width * 4, heads * 3 * N_KEYPOINTS, 1)
        centres = torch.arange(self.grid, dtype=torch.float32) * self.STRIDE + (self.STRIDE - 1) / 2
        self.register_buffer("centres", centres, persistent=False)
        self.kp_mean, self.kp_std = input_size / 2, input_size / 4

    def forward_train(self, x):
        f = self.head(self.encoder(x)).flatten(2).unflatten(1, (self.heads, 3, N_KEYPOINTS))
        scores, offsets = f[:, :, 0], f[:, :, 1:]                  # (N,H,68,G), (N,H,2,68,G)
        best = scores.argmax(-1)                                   # (N, H, 68)
        chosen = offsets.gather(-1, best[:, :, None, :, None].expand(-1, -1, 2, -1, 1))[..., 0]
        px = self.centres[best % self.grid] + chosen[:, :, 0] * self.STRIDE
        py = self.centres[best // self.grid] + chosen[:, :, 1] * self.STRIDE
        coords = (torch.stack([px, py], -1) - self.kp_mean) / self.kp_std
        return {"coords": coords.flatten(2), "scores": scores, "offsets": offsets}

    def aux_loss(self, out, targets, head):
        rows = torch.arange(len(head))
        scores, offsets = out["scores"][rows, head], out["offsets"][rows, head]
        pts = targets.view(len(targets), -1, 2) * self.kp_std + self.kp_mean
        cell_xy = ((pts - (self.STRIDE - 1) / 2) / self.STRIDE).round().clamp(0, self.grid - 1)
        cell = (cell_xy[..., 1] * self.grid + cell_xy[..., 0]).long()          # (N, 68)
        score_loss = F.cross_entropy(scores.flatten(0, 1), cell.flatten())
        want = (pts - self.centres[cell_xy.long()]) / self.STRIDE               # (N, 68, 2)
        got = offsets.gather(-1, cell[:, None, :, None].expand(-1, 2, -1, 1))[..., 0]
        return score_loss + self.offset_weight * (got.transpose(1, 2) - want).abs().mean()

    def confidence_of(self, out):
        return out["scores"].softmax(-1).amax(-1).mean(-1)


#: Architecture names as stored in checkpoints. The course's ``Net`` (top-level ``models.py``)
#: adds itself as "net" (``register_architecture``) when that module is imported.
ARCHITECTURES = {"resnet18": ResNet18Keypoints, "heatmap": HeatmapKeypoints, "pip": PIPKeypoints}


def register_architecture(name, cls):
    """Make ``cls`` buildable by name (``build_model``, checkpoints, ``train --arch``)."""
    ARCHITECTURES[name] = cls
    return cls


def build_model(arch, **arch_args):
    if arch not in ARCHITECTURES:
        hint = (" (the course's Net: import the course's models.py first)"
                if arch.startswith("net") else "")
        raise ValueError(f"unknown architecture {arch!r}{hint}; choose one of "
                         f"{sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**arch_args)


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())
