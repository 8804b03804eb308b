"""``fkp-ship``: measure a trained model and ship it with its ONNX twin and card
(``training.ship``).
"""
from __future__ import annotations

import argparse
import sys

from facial_keypoints.detection.base import DetectorWeightsError
from facial_keypoints.files import command_line
from facial_keypoints.keypoints.pipeline import KeypointPipeline
from facial_keypoints.keypoints.runtime import ModelLoadError
from facial_keypoints.training.ship import measure_and_ship


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the checkpoint to ship (train.py's best.pt)")
    p.add_argument("--dest", required=True,
                   help="where to write it, e.g. saved_models/x.pt (its .onnx and card go beside "
                        "it)")
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--refine", type=int, default=1)
    p.add_argument("--detector", default="blazeface")
    args = p.parse_args(argv)
    try:
        pipe = KeypointPipeline(args.model, detector=args.detector, flip_tta=args.flip_tta,
                                refine=args.refine)
    except (ModelLoadError, DetectorWeightsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    command = command_line(argv)
    dest, card = measure_and_ship(pipe, args.model, args.dest, command=command)
    print(f"shipped {dest} and {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
