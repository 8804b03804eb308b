"""A video file through the pipeline: frames decoded ahead by a worker thread, faces tracked
with ids, one JSON entry per frame and one for the video (frames expected and read), an
annotated copy put in place only when complete.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import cv2
from tqdm import tqdm

from facial_keypoints.files import commit, temp_beside
from facial_keypoints.filters.drawing import render


def video_frames(cap, workers):
    """The frames of an opened ``cv2.VideoCapture`` as RGB arrays, decoded by a worker thread
    (OpenCV decodes without holding Python's lock) ahead of the network when ``workers``.
    Closing the generator early (an interruption) stops the worker before it returns."""
    def read():
        ok, frame = cap.read()
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok else None

    if workers <= 0:
        while (frame := read()) is not None:
            yield frame
        return
    frames, stop = queue.Queue(maxsize=8), threading.Event()

    def decode():
        try:
            while not stop.is_set() and (frame := read()) is not None:
                frames.put(frame)
        finally:
            frames.put(None)  # the end, also after a decoding error

    thread = threading.Thread(target=decode, daemon=True)
    thread.start()
    try:
        while (frame := frames.get()) is not None:
            yield frame
    finally:
        stop.set()
        while thread.is_alive():    # let a worker blocked on a full queue see the stop
            try:
                frames.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def video_entry(path, error, **fields):
    """The entry that closes a video's frames: its size, frames expected (from the file's
    header; None where it gives none) and read, annotated copy, and error."""
    return {"path": path, "frame": None, "width": None, "height": None, "faces": [],
            **fields, "error": error}


def process_video(pipe, path, annotated=None, progress=True, filter_name=None,
                  track_every=10, workers=1):
    """Yields one entry per frame, faces tracked (``video.tracker.FaceTracker``: the detector
    every ``track_every`` frames, refits between them) with an ``id`` and keypoints smoothed
    over time, then the video's own entry (``video_entry``), whose ``error`` says when the
    video ended before the frames its header announces (cut or damaged). ``annotated``: file
    name of the annotated copy, written to a temporary file and put in place only when every
    frame is done (an interrupted run leaves an earlier copy as it was)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        yield video_entry(path, f"{path}: not a readable video", frames_expected=None,
                          frames_read=0)
        return
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0 \
        else None
    tracker = pipe.tracker(track_every, fps)
    writer, tmp, index, size = None, None, 0, (None, None)
    try:
        with tqdm(total=expected, desc=Path(path).name, unit="frame",
                  disable=not progress or None) as bar:
            for rgb in video_frames(cap, workers):
                faces = tracker(rgb, t=index / fps)
                h, w = size = rgb.shape[:2]
                yield {"path": path, "frame": index, "width": w, "height": h,
                       "faces": [f.to_json() for f in faces], "error": None}
                if annotated:
                    if writer is None:
                        tmp = temp_beside(annotated)
                        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                                 fps, (w, h))
                    writer.write(cv2.cvtColor(render(rgb, faces, filter_name),
                                              cv2.COLOR_RGB2BGR))
                index += 1
                bar.update(1)
        if writer is not None:
            writer.release()
            writer = None
            commit(tmp, annotated)
            tmp = None
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    error = None
    if index == 0:
        error = f"{path}: a video with no readable frame"
    elif expected and index < expected:
        error = (f"{path}: {index} of the {expected} frames its header announces were "
                 f"decoded: the video is cut short or damaged")
    fields = {"height": size[0], "width": size[1], "fps": round(float(fps), 3),
              "frames_expected": expected, "frames_read": index}
    if annotated and index:
        fields["annotated"] = str(annotated)
    yield video_entry(path, error, **fields)
