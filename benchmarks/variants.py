"""Which small model is accurate on faces in the wild? Short real runs, one factor at a time.

    # train every variant (finished ones are kept), then measure each one's latency:
    # results/variants.md
    python -m benchmarks.variants
    python -m benchmarks.variants --only pip,pip_wing  # some of them
    python -m benchmarks.variants --latency-only       # measure again (on an idle machine)
    # an earlier round, kept in its own table
    python -m benchmarks.variants --latency-only --out runs/variants_round1 \
        --table variants_round1 --note "..."

Every variant trains on the same faces — the course's training people and four fifths of the
300-W training photos with AFW — for the same number of epochs, and is measured on the same
held-out faces: the course's validation people (course head) and the held-out fifth of the
300-W photos (300-W head). Settings are chosen here, never on a test split. The runs are short
(about ten minutes each on two CPU cores): they rank the choices; they do not give the final
model's accuracy.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from benchmarks.common import keypoint_step, make_pipeline, write_table
from facial_keypoints.images import load_image
from facial_keypoints.keypoints.checkpoints import load_model, read_checkpoint
from facial_keypoints.keypoints.nets import count_parameters
from facial_keypoints.paths import DEFAULT_PHOTO, RESULTS_DIR, RUNS_DIR
from facial_keypoints.training.config import TrainConfig
from facial_keypoints.training.train import train

#: What every variant shares: two mark-up heads, the 300-W faces half of each epoch, the
#: augmentation for photos in the wild (300-W faces mirrored, course faces not: their labels
#: are not mirror-symmetric).
BASE = TrainConfig(arch="resnet18", width=32, input_size=112, extra_data="300w+afw",
                   markups="course,300w", mix_300w=0.5, epochs=6, flip=0.0, flip_300w=0.5,
                   degrees=20, degrade=0.25, jitter_scale=0.15, jitter_shift=0.08, gamma=0.3,
                   loss="l1", lr=1e-3, batch_size=32, workers=1,
                   command="python -m benchmarks.variants")
PIP = {"arch": "pip", "input_size": 128}
HEATMAP = {"arch": "heatmap"}

#: (slug, description, overrides of BASE)
VARIANTS = [
    ("regression", "direct regression (ResNet-18 w32, 112 px, L1)", {}),
    ("heatmap", "heatmaps, soft-argmax (stride 4, 112 px)", {"arch": "heatmap"}),
    ("pip", "heatmap + offsets, PIPNet's head (stride 16, 128 px)", PIP),
    ("pip_112", "PIPNet's head at 112 px", {**PIP, "input_size": 112}),
    ("pip_wing", "PIPNet's head + Wing loss", {**PIP, "loss": "wing"}),
    ("pip_color", "PIPNet's head, colour input", {**PIP, "color": True}),
    ("pip_one_head", "PIPNet's head, one head for both mark-ups", {**PIP, "markups": "course"}),
    # the heatmaps won the first rows: the other factors measured on them
    ("heatmap_wing", "heatmaps + Wing loss", {**HEATMAP, "loss": "wing"}),
    ("heatmap_128", "heatmaps at 128 px", {**HEATMAP, "input_size": 128}),
    ("heatmap_color", "heatmaps, colour input", {**HEATMAP, "color": True}),
    ("heatmap_no_mix", "heatmaps, 300-W not over-sampled", {**HEATMAP, "mix_300w": None}),
    ("heatmap_ema", "heatmaps + EMA of the weights (0.995)", {**HEATMAP, "ema": 0.995}),
]


def run_variant(slug, overrides, out_dir, data_dir=None, threads=None, progress=False):
    """Train one variant into ``out_dir/slug`` unless it finished already; its best.pt."""
    cfg = replace(BASE, **overrides, out=str(Path(out_dir) / slug), data_dir=data_dir,
                  threads=threads)
    best = Path(cfg.out) / "best.pt"
    log = Path(cfg.out) / "log.csv"
    done = log.is_file() and len(log.read_text().splitlines()) > cfg.epochs
    if not done:
        train(cfg, resume=True, progress=progress)
    return best


def row(slug, description, best, photo):
    """The table row of one trained variant: its validation NMEs, size and latency."""
    ckpt = read_checkpoint(best)
    m, cfg = ckpt["metrics"], ckpt["train_config"]
    pipe = make_pipeline(best, "onnx")  # as detect.py --backend onnx runs
    step, _ = keypoint_step(pipe, photo, pipe.detect(photo).boxes[0])
    return {"variant": slug, "what": description,
            "val NME course %": round(100 * m["val_nme"], 2),
            "val NME 300-W held-out %": round(100 * m["val_nme_300w"], 2),
            "best epoch": f"{m['epoch']}/{cfg['epochs']}",
            "parameters (M)": round(count_parameters(load_model(best)[0]) / 1e6, 2),
            "onnx ms/face": round(step, 2), "training min": m["train_minutes"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated slugs (default: every variant)")
    p.add_argument("--out", default=str(RUNS_DIR / "variants"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--latency-only", action="store_true",
                   help="train nothing: measure the finished variants again")
    p.add_argument("--train-only", action="store_true", help="train, measure nothing")
    p.add_argument("--results", default=str(RESULTS_DIR))
    p.add_argument("--table", default="variants",
                   help="name of the table in --results (default: variants)")
    p.add_argument("--note", help="a note added to the table's title (e.g. the code version)")
    args = p.parse_args(argv)
    chosen = [v for v in VARIANTS if not args.only or v[0] in args.only.split(",")]
    bests = {}
    for slug, description, overrides in chosen:
        best = Path(args.out) / slug / "best.pt"
        if not args.latency_only:
            print(f"== {slug}: {description}", flush=True)
            best = run_variant(slug, overrides, args.out, args.data_dir, args.threads,
                               progress=True)
        if best.is_file():
            bests[slug] = (description, best)
    if args.train_only:
        return 0
    photo = load_image(DEFAULT_PHOTO)
    rows = [row(slug, description, best, photo) for slug, (description, best) in bests.items()]
    path = write_table(rows, args.results, args.table,
                       "Model variants: validation NME (course people, 300-W held-out fifth), "
                       "size and CPU latency per face (ONNX, one thread)"
                       + (f"; {args.note}" if args.note else ""))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
