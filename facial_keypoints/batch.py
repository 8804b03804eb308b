"""Images, folders and videos through the pipeline, for ``fkp-detect``: which files an input
names, images decoded ahead by worker threads, one JSON entry per image as each is done,
annotated copies.
"""
from __future__ import annotations

import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from facial_keypoints.files import atomic_path
from facial_keypoints.filters.drawing import render
from facial_keypoints.images import ImageReadError, load_image, save_rgb
from facial_keypoints.keypoints.pipeline import check_boxes
from facial_keypoints.output import is_annotated_copy
from facial_keypoints.video.process import process_video

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm"}


VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------
def expand_inputs(paths, skip_annotated_in=None, recursive=False):
    """Image files, folders (their images and videos, sorted; with ``recursive``, those of
    their subfolders too; a folder with none stays as it is, for ``run`` to report) and video
    files, in the order given. Hidden files and folders (``.name``) are left out, and in the
    ``skip_annotated_in`` folder (``--annotate``'s) so are files named as annotated copies
    (``*_keypoints.*``): earlier output, not input."""
    skip = Path(skip_annotated_in).resolve() if skip_annotated_in else None
    items = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in _folder(path, recursive) if f.is_file()
                           and f.suffix.lower() in MEDIA_EXTENSIONS
                           and not (skip == f.parent.resolve() and is_annotated_copy(f)))
            items += [str(f) for f in files] or [str(p)]  # an empty one: reported by run
        else:
            items.append(str(p))
    return items


def _folder(path, recursive):
    """The entries of a folder (and of its subfolders, with ``recursive``), hidden ones left
    out."""
    for entry in path.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and recursive:
            yield from _folder(entry, recursive)
        else:
            yield entry


def skipped_in(paths, recursive=False) -> list[str]:
    """One line per folder of ``paths`` for what ``expand_inputs`` leaves out: subfolders
    (without ``recursive``) and files that are neither images nor videos."""
    notes = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            continue
        entries = list(_folder(path, recursive))
        folders = [e for e in entries if e.is_dir()]
        others = sorted(e.name for e in entries if e.is_file()
                        and e.suffix.lower() not in MEDIA_EXTENSIONS)
        if folders:
            notes.append(f"{p}: {len(folders)} subfolder(s) not searched (add --recursive), "
                         f"e.g. {sorted(f.name for f in folders)[0]}")
        if others:
            notes.append(f"{p}: {len(others)} file(s) neither image nor video skipped, e.g. "
                         f"{others[0]}")
    return notes


def is_video(path):
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS and Path(path).is_file()


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


def image_entry(path, image, faces, annotated=None, filter_name=None):
    """The JSON entry of one image (or of the error that kept it from being read); with
    ``annotated`` (a file name), its annotated copy is written there, in one step."""
    entry = {"path": path, "width": None, "height": None, "faces": [], "error": None}
    if isinstance(image, Exception):
        entry["error"] = str(image)
        return entry
    entry["height"], entry["width"] = image.shape[:2]
    entry["faces"] = [f.to_json() for f in faces]
    if annotated:
        try:
            with atomic_path(annotated) as tmp:
                save_rgb(tmp, render(image, faces, filter_name))
            entry["annotated"] = str(annotated)
        except OSError as e:   # e.g. the disk filled up during the run
            entry["error"] = f"{annotated}: the annotated copy could not be written ({e})"
    return entry


def read_boxes_file(path):
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--boxes {path}: not a readable UTF-8 JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f'--boxes {path}: expected {{"<image path>": [[x, y, w, h], ...]}}')
    try:
        return {str(k): check_boxes(v) for k, v in data.items()}
    except ValueError as e:
        raise ValueError(f"--boxes {path}: {e}") from None


def run(pipe, items, annotated=None, boxes=None, filter_name=None, batch_size=8,
        track_every=10, workers=1, quiet=False):
    """Every image and video of ``items`` (``expand_inputs``; a folder with nothing to read
    gets an error entry) through ``pipe``: yields one JSON entry per image, per video frame and
    per video (its frames expected and read), as each is done. Images go through the network
    ``batch_size`` at a time; images with given ``boxes`` ({path: boxes}) skip detection;
    videos are tracked (``video.process.process_video``); ``annotated``: {item: file name of
    its annotated copy} (``output.annotated_names``)."""
    boxes, annotated = boxes or {}, annotated or {}
    videos = {p for p in items if is_video(p)}
    pictures = read_images([p for p in items if p not in videos and not Path(p).is_dir()],
                           workers)
    batch = []   # read images waiting for the network: their crops go in one batch

    def flush():
        faces = pipe.find_faces_in([image for _, image in batch])
        done = [image_entry(path, image, found, annotated.get(path), filter_name)
                for (path, image), found in zip(batch, faces)]
        batch.clear()
        return done

    show = not quiet and len(items) > 1
    for path in tqdm(items, desc="images", unit="file", disable=not show or None):
        if Path(path).is_dir():    # a folder that expand_inputs found nothing in
            yield image_entry(path, ValueError(f"{path}: a folder with no image or video "
                                               f"files"), [])
        elif path in videos:
            yield from flush()
            yield from process_video(pipe, path, annotated.get(path), progress=not quiet,
                                     filter_name=filter_name, track_every=track_every,
                                     workers=workers)
        else:
            _, image = next(pictures)
            if isinstance(image, Exception) or path in boxes:
                yield from flush()
                found = [] if isinstance(image, Exception) else \
                    pipe.get_landmarks(image, boxes=boxes[path])
                yield image_entry(path, image, found, annotated.get(path), filter_name)
                continue
            batch.append((path, image))
            if len(batch) >= batch_size:
                yield from flush()
    yield from flush()
