"""The course's CNN, ``Net``, and the models module the course's notebooks import.

``Net`` is defined here, in the open: five conv blocks and two dense layers, for the learner to
read and change. Importing this module makes it buildable by name ("net") in the package
(``facial_keypoints.keypoints.nets.register_architecture``), so that ``train.py --arch net``,
checkpoints of a ``Net`` and ``KeypointPipeline(..., backend="torch")`` know it.

The shipped model's networks (``ResNet18Keypoints``, ``HeatmapKeypoints``, ``PIPKeypoints``)
live in the package, ``facial_keypoints/keypoints/nets.py``, and checkpoints in
``facial_keypoints/keypoints/checkpoints.py``; the names the notebooks use are imported below.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from facial_keypoints.keypoints.checkpoints import (  # noqa: F401  (the notebooks' names)
    checkpoint_meta,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from facial_keypoints.keypoints.nets import (  # noqa: F401
    ARCHITECTURES,
    N_OUTPUTS,
    build_model,
    count_parameters,
    register_architecture,
)
from facial_keypoints.keypoints.runtime import ModelLoadError  # noqa: F401
from facial_keypoints.paths import DEFAULT_MODEL  # noqa: F401


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
        fc1 + ReLU                  512
        fc2                         136              (68 x, y pairs)

    ``dropout=True`` adds dropout growing with depth (0.1 after conv1 up to 0.3 after conv5,
    0.4 after fc1), the usual remedy against overfitting; notebook 2 measures what it does here
    and trains without it. ``batch_norm=False`` leaves batch-norm out. The variants are also
    registered as ``net-dropout`` and ``net-no-batchnorm`` (``train.py --arch``).
    """

    def __init__(self, input_size=224, num_outputs=N_OUTPUTS, batch_norm=True, dropout=False):
        super().__init__()
        if input_size < 64:
            raise ValueError(f"Net needs an input of at least 64 px (five 2x2 poolings), got "
                             f"{input_size}")
        self.input_size = input_size
        chans = [1, 32, 64, 128, 256, 256]
        kernels = [5, 3, 3, 3, 1]
        drops = [0.1, 0.1, 0.2, 0.2, 0.3] if dropout else [0.0] * 5

        def block(i):
            norm = nn.BatchNorm2d(chans[i + 1]) if batch_norm else nn.Identity()
            return nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], kernels[i]), norm,
                                 nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Dropout(drops[i]))

        self.features = nn.Sequential(*[block(i) for i in range(5)])
        with torch.no_grad():
            n_flat = self.features(torch.zeros(1, 1, input_size, input_size)).numel()
        self.fc1 = nn.Linear(n_flat, 512)
        self.fc1_drop = nn.Dropout(0.4 if dropout else 0.0)
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


register_architecture("net", Net)
register_architecture("net-no-batchnorm", functools.partial(Net, batch_norm=False))
register_architecture("net-dropout", functools.partial(Net, dropout=True))
