"""``fkp-detect`` (``python detect.py`` in the course): find every face in images, folders or
videos and put 68 keypoints on each.

    fkp-detect                                   # the bundled photo -> out/annotated/
    fkp-detect photo.jpg folder/ clip.mp4 --json out.json --annotate out_dir/
    fkp-detect photo.jpg --boxes boxes.json      # skip detection for these images

``fkp-detect --help`` documents every option; the work is ``batch.run``; the API is
``facial_keypoints.KeypointPipeline``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import closing
from pathlib import Path

from facial_keypoints import __version__
from facial_keypoints.batch import expand_inputs, is_video, read_boxes_file, run, skipped_in
from facial_keypoints.cli import add_pipeline_options, int_at_least, interrupted, interruptible
from facial_keypoints.detection.base import DetectorWeightsError
from facial_keypoints.keypoints.pipeline import KeypointPipeline
from facial_keypoints.keypoints.runtime import BACKENDS, PRECISIONS, ModelLoadError
from facial_keypoints.output import (
    Results,
    annotated_names,
    check_annotate_folder,
    check_json_target,
)
from facial_keypoints.paths import DEFAULT_PHOTO


def build_parser(prog="fkp-detect"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Find every face in images, folders of images or videos and predict 68 "
                    "keypoints (iBUG order) on each, in the original image's pixels.",
        epilog="Outputs are checked before any work: an existing --json file or annotated copy "
               "is replaced only with --overwrite. Ctrl-C or SIGTERM stops the run in one line "
               "and keeps what was finished (exit status 130 or 143). Exit status: 0 when every "
               "input was read in full, 1 when some could not be (an unreadable file, a video "
               "cut short, a model giving non-finite keypoints: each gets an 'error' in the JSON "
               "and the others are still processed), 2 for bad usage (including a missing or "
               "unusable --model or --boxes file, or an output that cannot be written).")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="image file, folder of images, or video file; with none, the bundled "
                        f"photo {DEFAULT_PHOTO.name} is used and an annotated copy "
                        "is written (to out/annotated/ unless --annotate says otherwise)")
    p.add_argument("--json", metavar="OUT.json",
                   help='write {"model", "images": [{"path", "width", "height", "faces": '
                        '[{"box": [x, y, w, h], "keypoints": [[x0, y0], ...], "score", '
                        '"confidence", "roll"}], "annotated", "error"}], "complete"} '
                        '("annotated": the annotated copy, with --annotate); a video gives '
                        'one entry '
                        'per frame (with a "frame" number; each face an "id" kept across '
                        'frames) and then its own entry ("frame": null, "frames_expected", '
                        '"frames_read"). A name ending in .jsonl, or "-" for standard output, '
                        "gives JSON Lines instead: one entry per line, written as each is done. "
                        "Without --json or --annotate the JSON Lines go to standard output")
    p.add_argument("--recursive", "-r", action="store_true",
                   help="search folders' subfolders too (without it they are skipped, and "
                        "said so)")
    p.add_argument("--annotate", metavar="OUT_DIR",
                   help="write a copy of each image (or video) with boxes and keypoints drawn")
    p.add_argument("--boxes", metavar="BOXES.json",
                   help='face boxes {"<path as given>": [[x, y, w, h], ...]} that skip detection '
                        "for those images; a box is read as OpenCV's Haar frontal-face detector "
                        "draws it (brows to chin, cheek to cheek)")
    add_pipeline_options(p)
    p.add_argument("--filter", choices=("sunglasses", "moustache", "hat", "blur"),
                   help="with --annotate (or no PATH): draw this face filter (filters/overlays.py) "
                        "instead of boxes and keypoints, on images and videos")
    p.add_argument("--flip-tta", action="store_true",
                   help="average with the prediction on the mirrored face (slower, steadier)")
    p.add_argument("--backend", choices=BACKENDS, default="onnx",
                   help="run the network with onnxruntime (the default: no PyTorch needed, "
                        "about twice as fast on a CPU) or with PyTorch (pip install "
                        "'facial-keypoints[train]'; the same keypoints as --precision fp32 "
                        "within 0.05 px)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="onnx back-end: the model's INT8 twin where it has one (auto, the "
                        "default: the shipped model has one, measured on its model card), "
                        "int8 (that twin or an error) or fp32 (the float model)")
    p.add_argument("--track-every", type=int_at_least(1), default=10, metavar="N",
                   help="videos: run the face detector every N frames and follow the faces "
                        "from their keypoints in between (1: detect in every frame; default: "
                        "%(default)s)")
    p.add_argument("--batch", type=int_at_least(1), default=8, metavar="N",
                   help="images whose faces go through the network together (default: "
                        "%(default)s)")
    p.add_argument("--workers", type=int_at_least(0), default=1, metavar="N",
                   help="threads that decode images and video frames while the network runs; "
                        "0: decode in turn (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --json file or annotated copy (refused otherwise)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars or summary (both go to standard error)")
    return p


def main(argv=None, prog="fkp-detect"):
    """The command; ``prog``: its name in messages (the course runs it as ``detect.py``)."""
    # an interruption during the work is _main's (it keeps the finished part); this is one
    # before the work started, or while the model loads
    return interruptible(prog, lambda: _main(build_parser(prog), argv, prog))


def _main(parser, argv, prog):
    args = parser.parse_args(argv)
    paths, annotate, json_target = args.paths, args.annotate, args.json
    if not paths:
        paths = [str(DEFAULT_PHOTO)]
        annotate = annotate or str(Path("out") / "annotated")
    if args.filter and not annotate:
        parser.error("--filter draws on the annotated copies: give --annotate OUT_DIR")
    if json_target is None and annotate is None:
        json_target = "-"   # nothing asked for: the JSON, on standard output
    try:   # every output checked before the work, in well under a second
        check_json_target(json_target, args.overwrite)
        items = expand_inputs(paths, skip_annotated_in=annotate, recursive=args.recursive)
        annotated = {}
        if annotate:
            check_annotate_folder(annotate)
            annotated = annotated_names([i for i in items if not Path(i).is_dir()], annotate,
                                        is_video, args.overwrite)
        boxes = read_boxes_file(args.boxes) if args.boxes else {}
        pipe = KeypointPipeline(args.model, detector=args.detector, markup=args.markup,
                                flip_tta=args.flip_tta, backend=args.backend,
                                min_confidence=args.min_confidence, precision=args.precision)
    except (ValueError, ModelLoadError, DetectorWeightsError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        for note in skipped_in(paths, args.recursive):
            print(f"  skipped: {note}", file=sys.stderr)
    t0 = time.perf_counter()
    results = Results(json_target, args.model)
    try:
        with results, closing(run(pipe, items, annotated=annotated, boxes=boxes,
                                  filter_name=args.filter, batch_size=args.batch,
                                  track_every=args.track_every, workers=args.workers,
                                  quiet=args.quiet)) as entries:
            for entry in entries:
                results.add(entry)
    except KeyboardInterrupt as e:
        kept = "" if json_target in (None, "-") else f"; in {json_target}"
        return interrupted(prog, e, f": {results.done} image(s)/frame(s) finished and kept"
                                    f"{kept}; an annotated copy is written whole or not at all")
    except BrokenPipeError:   # e.g. piped into `head`: the reader is gone, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if not args.quiet:
        summarize(results, annotate, time.perf_counter() - t0)
    return 1 if results.failed else 0


def summarize(results, annotate, seconds):
    """The summary line and each input's problem, on standard error (standard output may
    carry the JSON)."""
    c = results.count
    videos = f" in {c['videos']} video(s)" if c["videos"] else ""
    where = f"; annotated -> {annotate}" if annotate else ""
    print(f"{c['images']} image(s), {c['frames']} frame(s){videos}, {c['faces']} face(s), "
          f"{len(results.errors)} error(s), {seconds:.2f} s "
          f"({results.done / max(seconds, 1e-9):.1f} images/s){where}", file=sys.stderr)
    for message in results.errors:
        print(f"  error: {message}", file=sys.stderr)
    for path in results.no_face:
        print(f"  no face found in {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
