"""Evaluate a keypoint model on a split, by a protocol (``fkp-evaluate``).

    python evaluate.py --help
"""
import sys

import models  # noqa: F401  (registers the course's Net, for its checkpoints)
from facial_keypoints.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("evaluate", "evaluate.py"))
