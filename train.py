"""Train a keypoint model (``fkp-train``), the course's ``Net`` included (``--arch net``).

    python train.py --help
"""
import sys

import models  # noqa: F401  (registers the course's Net as --arch net)
from facial_keypoints.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("train", "train.py"))
