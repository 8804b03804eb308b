"""``fkp-train`` (``python train.py`` in the course): train a keypoint model (``training.train``);
``--help`` lists every option (``training.config``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch.distributed as dist

from facial_keypoints.data.course import DataError
from facial_keypoints.data.fetch import fetch_dataset
from facial_keypoints.files import one_line
from facial_keypoints.images import ImageReadError
from facial_keypoints.keypoints.runtime import ModelLoadError
from facial_keypoints.training.config import parse_args
from facial_keypoints.training.loaders import (
    start_runtime,
)
from facial_keypoints.training.train import train


def main(argv=None):
    cfg, resume = parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    rt = None
    try:
        rt = start_runtime(cfg)
        if rt.main:
            fetch_dataset(cfg.data_dir, quiet=True)
        if rt.distributed:
            dist.barrier()  # the others wait for the data
        train(cfg, resume=resume, rt=rt)
    except (DataError, ImageReadError, ModelLoadError, ValueError) as e:
        where = f"rank {rank}: " if rt is not None and rt.distributed else ""
        print(f"error: {where}{one_line(e)}", file=sys.stderr)
        if not isinstance(e, ModelLoadError) and Path(cfg.out, "last.pt").is_file():
            print(f"(the last finished epoch is in {Path(cfg.out, 'last.pt')}; once this is "
                  f"fixed, add --resume to continue from it)", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
