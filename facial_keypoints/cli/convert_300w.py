"""``python -m facial_keypoints.cli.convert_300w``: convert 300-W's images and .pts files into the
crops training reads (``data.w300``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facial_keypoints.data.course import DataError
from facial_keypoints.data.fetch import W300_NAME
from facial_keypoints.data.w300 import convert_300w
from facial_keypoints.paths import DATA_DIR


def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert 300-W folders of images + .pts files "
                                     "(from its publishers) into data/300w_train.")
    parser.add_argument("sources", nargs="+", metavar="[PREFIX=]FOLDER")
    parser.add_argument("--data-dir", default=str(DATA_DIR))
    args = parser.parse_args(argv)
    try:
        convert_300w(args.sources, Path(args.data_dir) / W300_NAME)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
