"""Train dlib's method on this project's training faces (its shape-predictor trainer, dlib's
default options) and cache it for ``python -m benchmarks.benchmark --dlib``.

    python -m benchmarks.dlib_same_data          # about half an hour on 2 cores

What it trains on and why: ``benchmarks.dlib_reference``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.dlib_reference import CACHE, DLIB_HINT, train


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(CACHE), help="where to write the predictor")
    args = p.parse_args(argv)
    try:
        import dlib  # noqa: F401  (benchmark-only)
    except ImportError:
        print(f"benchmarks.dlib_same_data: error: dlib is not installed: {DLIB_HINT}",
              file=sys.stderr)
        return 2
    train(args.out)
    print(json.dumps(json.loads(Path(args.out).with_suffix(".json").read_text()), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
