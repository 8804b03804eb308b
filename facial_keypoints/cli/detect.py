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
import sys
import time
from pathlib import Path

from facial_keypoints.batch import (
    read_boxes_file,
    run,
)
from facial_keypoints.detection import DETECTORS
from facial_keypoints.detection.base import DetectorWeightsError
from facial_keypoints.files import atomic_write_json
from facial_keypoints.keypoints.pipeline import KeypointPipeline
from facial_keypoints.keypoints.runtime import BACKENDS, ModelLoadError
from facial_keypoints.paths import DEFAULT_MODEL, DEFAULT_PHOTO


def build_parser(prog="fkp-detect"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Find every face in images, folders of images or videos and predict 68 "
                    "keypoints (iBUG order) on each, in the original image's pixels.",
        epilog="Exit status: 0 when every input was read, 1 when some could not be (they get "
               "an 'error' in the JSON and the others are still processed), 2 for bad usage "
               "(including a missing or unusable --model or --boxes file).")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="image file, folder of images, or video file; with none, the bundled "
                        f"photo {DEFAULT_PHOTO.name} is used and an annotated copy "
                        "is written (to out/annotated/ unless --annotate says otherwise)")
    p.add_argument("--json", metavar="OUT.json",
                   help='write {"model", "images": [{"path", "width", "height", "faces": '
                        '[{"box": [x, y, w, h], "keypoints": [[x0, y0], ...], "score", '
                        '"confidence", "roll"}], "error"}]}; a video gives one entry per frame, '
                        'with a "frame" number, and each face an "id" kept across frames')
    p.add_argument("--annotate", metavar="OUT_DIR",
                   help="write a copy of each image (or video) with boxes and keypoints drawn")
    p.add_argument("--boxes", metavar="BOXES.json",
                   help='face boxes {"<path as given>": [[x, y, w, h], ...]} that skip detection '
                        "for those images; a box is read as OpenCV's Haar frontal-face detector "
                        "draws it (brows to chin, cheek to cheek)")
    p.add_argument("--detector", choices=sorted(DETECTORS), default=next(iter(DETECTORS)),
                   help="face detector: blazeface (MediaPipe's, any tilt) or haar (the "
                        "course's OpenCV cascade, upright faces)")
    p.add_argument("--markup", choices=("300w", "course"), default=None,
                   help="for a model with one head per mark-up: the iBUG 300-W standard "
                        "(default) or the course dataset's")
    p.add_argument("--model", default=str(DEFAULT_MODEL), metavar="FILE",
                   help="checkpoint written by train.py, or its .onnx export (default: the "
                        "shipped model)")
    p.add_argument("--filter", choices=("sunglasses", "moustache", "hat", "blur"),
                   help="with --annotate (or no PATH): draw this face filter (filters/overlays.py) "
                        "instead of boxes and keypoints, on images and videos")
    p.add_argument("--flip-tta", action="store_true",
                   help="average with the prediction on the mirrored face (slower, steadier)")
    p.add_argument("--backend", choices=BACKENDS, default="onnx",
                   help="run the network with onnxruntime (the default: no PyTorch needed, "
                        "about twice as fast on a CPU) or with PyTorch (pip install "
                        "'facial-keypoints[train]'; the same keypoints within 0.05 px)")
    p.add_argument("--track-every", type=int, default=10, metavar="N",
                   help="videos: run the face detector every N frames and follow the faces "
                        "from their keypoints in between (1: detect in every frame)")
    p.add_argument("--batch", type=int, default=8,
                   help="images whose faces go through the network together")
    p.add_argument("--workers", type=int, default=1,
                   help="threads that decode images and video frames while the network runs; "
                        "0: decode in turn")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    return p


def main(argv=None, prog="fkp-detect"):
    """The command; ``prog``: its name in messages (the course runs it as ``detect.py``)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    paths = args.paths
    annotate = args.annotate
    if not paths:
        paths = [str(DEFAULT_PHOTO)]
        annotate = annotate or str(Path("out") / "annotated")
    if args.filter and not annotate:
        parser.error("--filter draws on the annotated copies: give --annotate OUT_DIR")
    if args.json and Path(args.json).is_dir():
        parser.error(f"--json {args.json} is a folder: give a file name, e.g. {args.json}/out.json")
    try:
        boxes = read_boxes_file(args.boxes) if args.boxes else {}
        pipe = KeypointPipeline(args.model, detector=args.detector, markup=args.markup,
                                flip_tta=args.flip_tta, backend=args.backend)
    except (ValueError, ModelLoadError, DetectorWeightsError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    entries, failed = run(pipe, paths, annotate=annotate, boxes=boxes, filter_name=args.filter,
                          batch_size=args.batch, track_every=args.track_every,
                          workers=args.workers, quiet=args.quiet)
    result = {"model": str(args.model), "images": entries}
    if args.json:
        atomic_write_json(args.json, result)
    if not args.quiet:
        n_faces = sum(len(e["faces"]) for e in entries)
        n_bad = sum(e["error"] is not None for e in entries)
        where = f"; annotated -> {annotate}" if annotate else ""
        seconds = time.perf_counter() - t0
        print(f"{len(entries)} image(s)/frame(s), {n_faces} face(s), {n_bad} unreadable, "
              f"{seconds:.2f} s ({len(entries) / max(seconds, 1e-9):.1f} images/s){where}")
        for e in entries:
            if e["error"]:
                print(f"  error: {e['error']}", file=sys.stderr)
            elif not e["faces"] and "frame" not in e:
                print(f"  no face found in {e['path']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
