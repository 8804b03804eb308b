"""``python -m facial_keypoints.cli.label_noise``: how far apart two annotations of nearly the same
frame are (``evaluation.label_noise``).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from facial_keypoints.evaluation.label_noise import label_noise


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", choices=["train", "test"], default="train")
    args = p.parse_args(argv)
    pairs = label_noise(args.split)
    median = float(np.median(pairs))
    print(f"{len(pairs)} pairs of consecutive frames ({args.split} split): pair NME median "
          f"{100 * median:.2f} %, mean {100 * pairs.mean():.2f} %; per frame about "
          f"{100 * median / np.sqrt(2):.2f} % (median / sqrt 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
