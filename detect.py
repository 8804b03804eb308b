"""Find every face in images, folders or videos and put 68 keypoints on each: the command.

    python detect.py                                   # the bundled photo -> out/annotated/
    python detect.py photo.jpg folder/ clip.mp4 --json out.json --annotate out_dir/
    python detect.py photo.jpg --boxes boxes.json      # skip detection for these images

``python detect.py --help`` documents every option; the API is ``pipeline.KeypointPipeline``.
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

import filters
from drawing import draw_faces
from fetch_data import DetectorWeightsError
from images import DEFAULT_PHOTO, ImageReadError, load_image, save_rgb
from models import DEFAULT_MODEL, ModelLoadError
from pipeline import BACKENDS, DETECTORS, KeypointPipeline, check_boxes
from utils import atomic_write_json

ROOT = Path(__file__).resolve().parent
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def render(image, faces, filter_name=None):
    """The annotated picture: boxes and keypoints, or (with ``filter_name``) a face filter."""
    if filter_name:
        return filters.apply_filter(image, faces, filter_name)
    return draw_faces(image, faces)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------
def expand_inputs(paths):
    """Image files, folders (their images, sorted) and video files, in the order given."""
    items = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.is_file()
                           and f.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
            items += [str(f) for f in files]
        else:
            items.append(str(p))
    return items


def is_video(path):
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _annotated_name(out_dir, path, suffix=None):
    p = Path(path)
    return Path(out_dir) / f"{p.stem}_keypoints{suffix or p.suffix or '.png'}"


def _read(path):
    """(path, RGB array or the ImageReadError) — what a decoding worker hands over."""
    try:
        return path, load_image(path)
    except ImageReadError as e:
        return path, e


def read_images(paths, workers):
    """(path, image or error) for each path, in order; decoded by ``workers`` threads (0: here)
    a few images ahead while the caller runs the network: Pillow decodes without holding
    Python's lock, so decoding and the network share the cores."""
    if workers <= 0 or len(paths) < 2:
        yield from map(_read, paths)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = deque(pool.submit(_read, p) for p in paths[:2 * workers])
        for p in paths[2 * workers:]:
            yield pending.popleft().result()
            pending.append(pool.submit(_read, p))
        while pending:
            yield pending.popleft().result()


def image_entry(path, image, faces, annotate, filter_name=None):
    """The JSON entry of one image (or of the error that kept it from being read), and its
    annotated copy."""
    entry = {"path": path, "width": None, "height": None, "faces": [], "error": None}
    if isinstance(image, Exception):
        entry["error"] = str(image)
        return entry
    entry["height"], entry["width"] = image.shape[:2]
    entry["faces"] = [f.to_json() for f in faces]
    if annotate:
        suffix = Path(path).suffix.lower()
        suffix = suffix if suffix in (".jpg", ".jpeg", ".png") else ".png"
        save_rgb(_annotated_name(annotate, path, suffix), render(image, faces, filter_name))
    return entry


def video_frames(cap, workers):
    """The frames of an opened ``cv2.VideoCapture`` as RGB arrays, decoded by a worker thread
    (OpenCV decodes without holding Python's lock) ahead of the network when ``workers``."""
    def read():
        ok, frame = cap.read()
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok else None

    if workers <= 0:
        while (frame := read()) is not None:
            yield frame
        return
    frames = queue.Queue(maxsize=8)

    def decode():
        try:
            while (frame := read()) is not None:
                frames.put(frame)
        finally:
            frames.put(None)  # the end, also after a decoding error

    thread = threading.Thread(target=decode, daemon=True)
    thread.start()
    while (frame := frames.get()) is not None:
        yield frame
    thread.join()


def process_video(pipe, path, annotate, progress=True, filter_name=None, track_every=10,
                  workers=1):
    """One entry per frame: faces tracked (``tracking.FaceTracker``: the detector every
    ``track_every`` frames, refits between them) with an ``id``, keypoints smoothed over time.
    Returns (entries, error or None)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        return [{"path": path, "frame": None, "width": None, "height": None, "faces": [],
                 "error": f"{path}: not a readable video"}], True
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    tracker = pipe.tracker(track_every, fps)
    writer, entries, index = None, [], 0
    with tqdm(total=total, desc=Path(path).name, unit="frame",
              disable=not progress or None) as bar:
        for rgb in video_frames(cap, workers):
            faces = tracker(rgb, t=index / fps)
            h, w = rgb.shape[:2]
            entries.append({"path": path, "frame": index, "width": w, "height": h,
                            "faces": [f.to_json() for f in faces], "error": None})
            if annotate:
                if writer is None:
                    out = _annotated_name(annotate, path, ".mp4")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (w, h))
                writer.write(cv2.cvtColor(render(rgb, faces, filter_name), cv2.COLOR_RGB2BGR))
            index += 1
            bar.update(1)
    cap.release()
    if writer is not None:
        writer.release()
    if index == 0:
        return [{"path": path, "frame": None, "width": None, "height": None, "faces": [],
                 "error": f"{path}: a video with no readable frame"}], True
    return entries, False


def read_boxes_file(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--boxes {path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f'--boxes {path}: expected {{"<image path>": [[x, y, w, h], ...]}}')
    return {str(k): check_boxes(v) for k, v in data.items()}


def build_parser():
    p = argparse.ArgumentParser(
        prog="detect.py",
        description="Find every face in images, folders of images or videos and predict 68 "
                    "keypoints (iBUG order) on each, in the original image's pixels.",
        epilog="Exit status: 0 when every input was read, 1 when some could not be (they get "
               "an 'error' in the JSON and the others are still processed), 2 for bad usage "
               "(including a missing or unusable --model or --boxes file).")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="image file, folder of images, or video file; with none, the bundled "
                        f"photo {DEFAULT_PHOTO.relative_to(ROOT)} is used and an annotated copy "
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
                   help="checkpoint written by train.py (default: the shipped model)")
    p.add_argument("--filter", choices=("sunglasses", "moustache", "hat", "blur"),
                   help="with --annotate (or no PATH): draw this face filter (filters.py) "
                        "instead of boxes and keypoints, on images and videos")
    p.add_argument("--flip-tta", action="store_true",
                   help="average with the prediction on the mirrored face (slower, steadier)")
    p.add_argument("--backend", choices=BACKENDS, default="onnx",
                   help="run the network with onnxruntime (the default: about twice as fast "
                        "on a CPU; the first run exports <model>.onnx beside the checkpoint, "
                        "some seconds) or with PyTorch (same keypoints within 0.05 px)")
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


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    paths = args.paths
    annotate = args.annotate
    if not paths:
        paths = [str(DEFAULT_PHOTO)]
        annotate = annotate or str(ROOT / "out" / "annotated")
    if args.filter and not annotate:
        parser.error("--filter draws on the annotated copies: give --annotate OUT_DIR")
    if args.json and Path(args.json).is_dir():
        parser.error(f"--json {args.json} is a folder: give a file name, e.g. {args.json}/out.json")
    if args.backend == "onnx":
        torch.set_num_threads(1)  # torch only crops; onnxruntime runs the network
    try:
        boxes = read_boxes_file(args.boxes) if args.boxes else {}
        pipe = KeypointPipeline(args.model, detector=args.detector, markup=args.markup,
                                flip_tta=args.flip_tta, backend=args.backend)
    except (ValueError, ModelLoadError, DetectorWeightsError) as e:
        print(f"detect.py: error: {e}", file=sys.stderr)
        return 2
    items = expand_inputs(paths)
    entries, failed = [], False
    for p in paths:
        if Path(p).is_dir() and not expand_inputs([p]):
            entries.append({"path": p, "width": None, "height": None, "faces": [],
                            "error": f"{p}: a folder with no image or video files"})
            failed = True
    t0 = time.perf_counter()
    videos = {p for p in items if is_video(p) and Path(p).is_file()}
    pictures = read_images([p for p in items if p not in videos], args.workers)
    batch = []   # read images waiting for the network: their crops go in one batch

    def flush():
        faces = pipe.find_faces_in([image for _, image in batch])
        for (path, image), found in zip(batch, faces):
            entries.append(image_entry(path, image, found, annotate, args.filter))
        batch.clear()

    show = not args.quiet and len(items) > 1
    for path in tqdm(items, desc="images", unit="file", disable=not show or None):
        if path in videos:
            flush()
            video_entries, bad = process_video(pipe, path, annotate, progress=not args.quiet,
                                               filter_name=args.filter,
                                               track_every=args.track_every,
                                               workers=args.workers)
            entries += video_entries
            failed |= bad
            continue
        _, image = next(pictures)
        if isinstance(image, Exception) or path in boxes:
            flush()
            found = [] if isinstance(image, Exception) else \
                pipe.get_landmarks(image, boxes=boxes[path])
            entries.append(image_entry(path, image, found, annotate, args.filter))
            failed |= isinstance(image, Exception)
            continue
        batch.append((path, image))
        if len(batch) >= args.batch:
            flush()
    flush()
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
