"""``fkp-fetch-data`` (``python fetch_data.py`` in the course): fetch the course dataset, the
course photos and, from a mirror, the 300-W crops (``data.fetch``).
"""
from __future__ import annotations

import argparse
import sys

from facial_keypoints.data.course import DataError
from facial_keypoints.data.fetch import (
    W300_SETS,
    check_dataset,
    fetch_300w,
    fetch_course_images,
    fetch_dataset,
)
from facial_keypoints.paths import COURSE_IMAGES_DIR, DATA_DIR


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fetch the dataset into data/ and the course "
                                     "photos into images/course/.")
    parser.add_argument("--data-dir", default=str(DATA_DIR))
    parser.add_argument("--images-dir", default=str(COURSE_IMAGES_DIR))
    parser.add_argument("--check", action="store_true", help="only check data/, fetch nothing")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check_dataset(args.data_dir)
            print("\n".join(problems) or "dataset complete")
            return 1 if problems else 0
        fetch_dataset(args.data_dir)
        fetch_course_images(args.images_dir)
        for name in W300_SETS:
            fetch_300w(args.data_dir, name=name)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
