"""Find every face in images, folders or videos and put 68 keypoints on each (``fkp-detect``).

    python detect.py --help
"""
import sys

import models  # noqa: F401  (registers the course's Net, for its checkpoints)
from facial_keypoints.cli.detect import main

if __name__ == "__main__":
    sys.exit(main(prog="detect.py"))
