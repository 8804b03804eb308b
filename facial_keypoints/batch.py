"""Images, folders and videos through the pipeline, for ``fkp-detect``: which files an input
names, images decoded ahead by worker threads, one JSON entry per image, annotated copies.
"""
from __future__ import annotations

import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from facial_keypoints.files import annotated_name
from facial_keypoints.filters.drawing import render
from facial_keypoints.images import ImageReadError, load_image, save_rgb
from facial_keypoints.keypoints.pipeline import check_boxes
from facial_keypoints.video.process import process_video

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm"}


VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


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
        save_rgb(annotated_name(annotate, path, suffix), render(image, faces, filter_name))
    return entry


def read_boxes_file(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--boxes {path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f'--boxes {path}: expected {{"<image path>": [[x, y, w, h], ...]}}')
    return {str(k): check_boxes(v) for k, v in data.items()}


def run(pipe, paths, annotate=None, boxes=None, filter_name=None, batch_size=8, track_every=10,
        workers=1, quiet=False):
    """Every image, folder and video of ``paths`` through ``pipe``: (JSON entries, whether some
    input could not be read). Images go through the network ``batch_size`` at a time; images
    with given ``boxes`` ({path: boxes}) skip detection; videos are tracked
    (``video.process.process_video``); ``annotate``: folder for annotated copies."""
    boxes = boxes or {}
    items = expand_inputs(paths)
    entries, failed = [], False
    for p in paths:
        if Path(p).is_dir() and not expand_inputs([p]):
            entries.append({"path": p, "width": None, "height": None, "faces": [],
                            "error": f"{p}: a folder with no image or video files"})
            failed = True
    videos = {p for p in items if is_video(p) and Path(p).is_file()}
    pictures = read_images([p for p in items if p not in videos], workers)
    batch = []   # read images waiting for the network: their crops go in one batch

    def flush():
        faces = pipe.find_faces_in([image for _, image in batch])
        for (path, image), found in zip(batch, faces):
            entries.append(image_entry(path, image, found, annotate, filter_name))
        batch.clear()

    show = not quiet and len(items) > 1
    for path in tqdm(items, desc="images", unit="file", disable=not show or None):
        if path in videos:
            flush()
            video_entries, bad = process_video(pipe, path, annotate, progress=not quiet,
                                               filter_name=filter_name,
                                               track_every=track_every,
                                               workers=workers)
            entries += video_entries
            failed |= bad
            continue
        _, image = next(pictures)
        if isinstance(image, Exception) or path in boxes:
            flush()
            found = [] if isinstance(image, Exception) else \
                pipe.get_landmarks(image, boxes=boxes[path])
            entries.append(image_entry(path, image, found, annotate, filter_name))
            failed |= isinstance(image, Exception)
            continue
        batch.append((path, image))
        if len(batch) >= batch_size:
            flush()
    flush()
    return entries, failed
