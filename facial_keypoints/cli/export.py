"""``fkp-export``: export a checkpoint to ONNX (``keypoints.export``)."""
from __future__ import annotations

import argparse
import sys

from facial_keypoints.keypoints.export import export_onnx
from facial_keypoints.keypoints.runtime import (
    ModelLoadError,
    OnnxExportError,
)
from facial_keypoints.paths import DEFAULT_MODEL


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint written by train.py")
    p.add_argument("--out", default=None, help="ONNX file (default: beside the checkpoint)")
    args = p.parse_args(argv)
    try:
        dest = export_onnx(args.model, args.out)
    except (ModelLoadError, OnnxExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
