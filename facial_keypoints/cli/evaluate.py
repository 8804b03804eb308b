"""``fkp-evaluate``: evaluate a keypoint model on a split, by a protocol (``evaluation.evaluate``).
"""
from __future__ import annotations

import argparse
import json
import sys

from facial_keypoints.detection import DETECTORS
from facial_keypoints.detection.base import save_calibration
from facial_keypoints.evaluation.evaluate import (
    PROTOCOL_TITLES,
    calibrate_detector,
    evaluate,
    holdout_names,
)
from facial_keypoints.evaluation.metrics import format_metrics
from facial_keypoints.files import atomic_write_json, command_line
from facial_keypoints.keypoints.pipeline import KeypointPipeline
from facial_keypoints.paths import DEFAULT_MODEL


def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a keypoint model on the test split.")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--protocol", choices=["crop", "pipeline", "both"], default="both")
    p.add_argument("--split", choices=["test", "val", "train", "300w", "300w_test"],
                   default="test",
                   help="val: the validation people of the model's training run (choose "
                        "settings there); 300w: the 300-W training crops; 300w_test: 300-W "
                        "test photos (for testing only)")
    p.add_argument("--subset", type=int, default=None, help="only N frames (fast check)")
    p.add_argument("--holdout", action="store_true",
                   help="with --split 300w: only its held-out fifth (as the model's training "
                        "run split it), faces the model has not seen")
    p.add_argument("--detector", choices=sorted(DETECTORS), default=next(iter(DETECTORS)))
    p.add_argument("--degrees", type=float, default=0.0,
                   help="turn every image (and its labels) by this many degrees first")
    p.add_argument("--markup", choices=["course", "300w"], default=None,
                   help="the output head to read (default: the split's own mark-up)")
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--refine", type=int, default=1,
                   help="re-crops around the predicted keypoints (pipeline.KeypointPipeline)")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--calibrate", action="store_true",
                   help="measure --detector's box -> crop rule on training faces, store it in "
                        "the package's detection/calibration.json and exit")
    args = p.parse_args(argv)
    if args.calibrate:
        detector = DETECTORS[args.detector]()
        found = calibrate_detector(detector, args.subset or 600)
        found["measured_by"] = command_line(argv)
        save_calibration(detector.name, found)
        print(json.dumps(found))
        return 0
    if args.holdout and args.split != "300w":
        p.error("--holdout goes with --split 300w")
    pipe = KeypointPipeline(args.model, detector=args.detector, flip_tta=args.flip_tta,
                            refine=args.refine)
    if args.markup and args.markup not in pipe.markups:
        p.error(f"--markup {args.markup}: {args.model} has no such head; it has "
                f"{', '.join(pipe.markups)}")
    names = holdout_names(pipe) if args.holdout else None
    results = {}
    for protocol in (["crop", "pipeline"] if args.protocol == "both" else [args.protocol]):
        summary, _ = evaluate(pipe, args.split, protocol, args.subset, names=names,
                              degrees=args.degrees, markup=args.markup)
        results[protocol] = summary
        title = PROTOCOL_TITLES[protocol].replace("detection", f"{args.detector} detection")
        print(format_metrics(summary, f"{title}  [{args.split} split"
                                      f"{f', turned {args.degrees:g} deg' if args.degrees else ''}"
                                      f", {args.model}{', flip TTA' if args.flip_tta else ''}]"))
        print(f"  time            {summary['ms_per_image']:.1f} ms per image")
    if args.json:
        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
