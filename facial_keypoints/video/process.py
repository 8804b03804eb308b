"""A video file through the pipeline: frames decoded ahead by a worker thread, faces tracked
with ids, one JSON entry per frame, an annotated copy.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import cv2
from tqdm import tqdm

from facial_keypoints.files import annotated_name
from facial_keypoints.filters.drawing import render


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
    """One entry per frame: faces tracked (``video.tracker.FaceTracker``: the detector every
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
                    out = annotated_name(annotate, path, ".mp4")
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
