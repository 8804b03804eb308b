"""Find every face in images, folders or videos and put 68 keypoints on each (``fkp-detect``).

    python detect.py --help
"""
import importlib
import sys

from facial_keypoints.cli.detect import main
from facial_keypoints.keypoints.runtime import before_torch

if __name__ == "__main__":
    # the course's Net (models.py) is registered for its checkpoints when PyTorch first reads
    # one: --help and the shipped ONNX model start without loading PyTorch
    before_torch(lambda: importlib.import_module("models"))
    sys.exit(main(prog="detect.py"))
