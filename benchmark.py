"""Speed and steadiness of the pipeline on this machine's CPU: prints the figures it measures.

    python benchmark.py                  # everything below, on the shipped model
    python benchmark.py --frames 100     # fewer test frames

* keypoint step: the model on one face crop (batch 1), per face, median of repeated runs;
* full pipeline: load -> Haar detection -> crops -> model -> keypoints in image pixels, per image,
  on the bundled photo, the course photos (when fetched) and the test split;
* video jitter: a still photo repeated as a video with camera-like noise added to each frame; the
  mean frame-to-frame movement of the keypoints without and with temporal smoothing.

Timings are wall-clock on whatever else the machine is doing: run it on an idle machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import data_load
from detect import (DEFAULT_MODEL, DEFAULT_PHOTO, FaceKeypointDetector, KeypointSmoother,
                    crop_for_box, jitter)


def time_it(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def keypoint_step(detector, image, box, repeat=200):
    """Median ms for the model on one face (crop + normalise + forward + map back)."""
    crop = crop_for_box(box, detector.crop_scale)
    for _ in range(10):
        detector.keypoints_for_crops(image, [crop])
    crop_prep = time_it(lambda: detector.keypoints_for_crops(image, [crop]), repeat)
    x = torch.zeros(1, 1, detector.size, detector.size)
    with torch.inference_mode():
        forward = time_it(lambda: detector.model(x), repeat)
    return 1000 * statistics.median(crop_prep), 1000 * statistics.median(forward)


def pipeline_per_image(detector, paths, repeat=1):
    """Median ms per image for the whole pipeline, and the number of faces found."""
    times, faces = [], 0
    for path in paths:
        t = time_it(lambda: detector.get_landmarks(path), repeat)
        times.append(min(t))
        faces += len(detector.get_landmarks(path))
    return 1000 * statistics.median(times), 1000 * float(np.mean(times)), faces


def video_jitter(detector, frames=40, noise=6.0, alpha=0.4, seed=0):
    """Keypoint jitter (px per frame) of a still face seen through a noisy camera."""
    image = data_load.load_image(DEFAULT_PHOTO)
    rng = np.random.default_rng(seed)
    raw, smooth = [], []
    smoother = KeypointSmoother(alpha)
    for _ in range(frames):
        noisy = np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)
        faces = detector.get_landmarks(noisy)
        if len(faces) != 1:
            continue
        raw.append(faces[0].keypoints)
        smooth.append(smoother(faces)[0].keypoints)
    return jitter(raw), jitter(smooth), len(raw)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--frames", type=int, default=200, help="test frames for the pipeline timing")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--flip-tta", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    detector = FaceKeypointDetector(args.model, flip_tta=args.flip_tta)
    print(f"model {args.model} ({detector.meta['arch']} {detector.meta['arch_args']}, "
          f"{detector.size} px), torch threads {torch.get_num_threads()}"
          f"{', flip TTA' if args.flip_tta else ''}")

    photo = data_load.load_image(DEFAULT_PHOTO)
    boxes = detector.detect_faces(photo)
    if len(boxes) == 0:
        print("no face found in the bundled photo", file=sys.stderr)
        return 1
    step, forward = keypoint_step(detector, photo, boxes[0])
    print(f"keypoint step, batch 1: {step:.2f} ms per face (of which the network's forward "
          f"pass {forward:.2f} ms)")

    sets = [("bundled photo", [DEFAULT_PHOTO])]
    course = [data_load.COURSE_IMAGES_DIR / n for n in ("obamas.jpg", "the_beatles.jpg",
                                                         "mona_lisa.jpg")]
    if all(c.is_file() for c in course):
        sets.append(("course photos", course))
    if data_load.dataset_ready():
        test = data_load.dataset("test", subset=args.frames)
        sets.append((f"test split ({len(test)} frames)",
                     [data_load.DATA_DIR / "test" / f for f in test.filenames]))
    for name, paths in sets:
        median, mean, faces = pipeline_per_image(detector, paths, repeat=3 if len(paths) < 10 else 1)
        print(f"full pipeline, {name}: median {median:.1f} ms, mean {mean:.1f} ms per image "
              f"({faces} faces in {len(paths)} images)")

    raw, smooth, n = video_jitter(detector)
    print(f"video jitter on a still face with camera noise ({n} frames): "
          f"{raw:.2f} px/frame raw, {smooth:.2f} px/frame smoothed "
          f"({100 * (1 - smooth / raw):.0f} % less)" if raw else "video jitter: no face tracked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
