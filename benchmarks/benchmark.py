"""Speed and accuracy on this machine's CPU, side by side with dlib: prints what it measures.

    python -m benchmarks.benchmark  # speed: keypoint step, full pipeline, video
    python -m benchmarks.benchmark --dlib  # + this project against dlib, same faces, one run
    python -m benchmarks.benchmark --models a.pt b.pt  # one row per model: size, latency, test NME
    python -m benchmarks.benchmark --confidence  # does the model's confidence flag its failures?

* keypoint step: the network on one face crop at batch 1 (crop + normalise + forward + map
  back), per face, median of repeated runs, with the PyTorch and the ONNX back-ends (each set
  up as it runs fastest: ``make_pipeline``);
* full pipeline: load -> face detection -> crops -> model -> keypoints in image pixels, per
  image, on the bundled photo, the course photos (when fetched) and the test split;
* video: a 640 x 480 clip made from the bundled photo along a known path (a still face seen
  through camera noise; a face that drifts and turns by up to 40 degrees), tracked
  (``video.tracker.FaceTracker``): frames per second, frames without the face, and keypoint
  jitter (still face) and lag (moving face) raw, with the old exponential smoother and with
  the One Euro filter;
* ``--dlib``: on every face of the course test split and of ``300w_test`` (300-W test photos
  neither system was trained on), in this one process, this project's pipeline and dlib's
  (HOG face detector + ``shape_predictor_68_face_landmarks.dat`` from the
  ``face-recognition-models`` package): faces found, NME, FR@8 %, AUC@8 %, time per face of
  the keypoint step and per image of the whole pipeline; ours with PyTorch, with onnxruntime
  on the float model and (where the model has one, as the shipped one does) on its INT8 twin,
  the default; dlib's with its shipped model and with the predictor its own trainer made from
  this project's 300-W training faces (``benchmarks.dlib_same_data``: the method on equal
  data; trained first, about half an hour, when it is not cached). dlib is an optional,
  benchmark-only dependency: ``pip install dlib-bin face-recognition-models``;
* ``--models``: parameters, size on disk, keypoint-step latency (PyTorch and ONNX) and the
  full-pipeline test metrics of each checkpoint (``evaluate.evaluate``);
* ``--confidence``: on ``300w_test``, the faces sorted by the model's confidence: how many of
  the failures (NME > 8 %) the least confident tenth holds, and the area under the curve of
  failures caught against faces flagged; then what the default ``min_confidence`` drops:
  false faces on face-free pictures and on the bundled photo turned, real faces of the test
  sets upright and turned (``min_confidence_report``).

Tables are printed and written as Markdown and JSON to ``--out`` (default ``results/``).
Timings are wall-clock on whatever else the machine is doing: run it on an idle machine.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from benchmarks.common import (
    face_free_images,
    failures_caught,
    keypoint_step,
    make_pipeline,
    set_torch_threads,
    shown,
    time_it,
    use_threads,
    write_table,
)
from benchmarks.dlib_reference import DlibPipeline, _dlib_match, same_data_predictor
from facial_keypoints.data.fetch import dataset_ready
from facial_keypoints.detection.base import crops_for
from facial_keypoints.evaluation.evaluate import (
    evaluate,
    markup_for,
    match_detection,
    rotated,
    split_dataset,
)
from facial_keypoints.evaluation.metrics import FAIL_THRESHOLD, nme, summarize
from facial_keypoints.geometry import CROP_SCALE
from facial_keypoints.images import load_image
from facial_keypoints.keypoints.checkpoints import checkpoint_meta, save_checkpoint
from facial_keypoints.keypoints.nets import build_model, count_parameters
from facial_keypoints.keypoints.runtime import ONNX_THREADS
from facial_keypoints.landmarks import N_KEYPOINTS
from facial_keypoints.paths import (
    COURSE_IMAGES_DIR,
    DATA_DIR,
    DEFAULT_MODEL,
    DEFAULT_PHOTO,
    RESULTS_DIR,
    RUNS_DIR,
)
from facial_keypoints.video.smoothing import jitter


def pipeline_per_image(pipe, paths, repeat=1):
    """Median and mean ms per image for the whole pipeline, and the number of faces found."""
    times, faces = [], 0
    for path in paths:
        t = time_it(lambda path=path: pipe.get_landmarks(path), repeat)
        times.append(min(t))
        faces += len(pipe.get_landmarks(path))
    return 1000 * statistics.median(times), 1000 * float(np.mean(times)), faces


# --------------------------------------------------------------------------------------------
# Video: a clip with a known path
# --------------------------------------------------------------------------------------------
def clip_path(frames, motion):
    """The face's pose in each frame: (dx, dy, degrees), a shift in pixels and a roll."""
    t = np.arange(frames) / 30.0
    if motion == "still":
        return np.zeros((frames, 3))
    return np.stack([60 * np.sin(2 * np.pi * t / 4), 20 * np.sin(2 * np.pi * t / 3),
                     40 * np.sin(2 * np.pi * t / 5)], axis=1)


def synthetic_clip(photo, frames=150, motion="turn", noise=6.0, size=(640, 480), seed=0):
    """(frames, matrices): the photo, shrunk to fit ``size``, moved along ``clip_path`` with
    camera-like noise; ``matrices`` map the photo's pixels into each frame's."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = min(w, h) / max(photo.shape[:2]) * 0.9
    out, mats = [], []
    for dx, dy, deg in clip_path(frames, motion):
        m = cv2.getRotationMatrix2D((photo.shape[1] / 2, photo.shape[0] / 2), -deg, base)
        m[:, 2] += [w / 2 - photo.shape[1] / 2 + dx, h / 2 - photo.shape[0] / 2 + dy]
        frame = cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR)
        frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        out.append(frame)
        mats.append(m)
    return out, mats


def ema(frames, alpha=0.4):
    """The exponential smoother ``detect.py`` used before the One Euro filter."""
    out = [frames[0]]
    for f in frames[1:]:
        out.append(alpha * f + (1 - alpha) * out[-1])
    return out


def video_benchmark(pipe, track_every=10):
    """Tracking a face through the two synthetic clips: speed, misses, jitter and lag."""
    photo = load_image(DEFAULT_PHOTO)
    reference = pipe.get_landmarks(photo)[0].keypoints  # the face's keypoints in the photo
    rows = []
    for motion in ("still", "turn"):
        frames, mats = synthetic_clip(photo, motion=motion)
        truth = [reference @ m[:, :2].T + m[:, 2] for m in mats]
        results = {}
        for name, smoothing in (("raw", False), ("One Euro", True)):
            tracker = pipe.tracker(track_every, 30.0, smoothing)
            t0 = time.perf_counter()
            seen = [tracker(f, t=i / 30.0) for i, f in enumerate(frames)]
            seconds = time.perf_counter() - t0
            results[name] = (seen, seconds, tracker.detector_runs)
        raw = [f[0].keypoints if f else None for f in results["raw"][0]]
        kept = [i for i, p in enumerate(raw) if p is not None]
        smoothed = {"raw": [raw[i] for i in kept],
                    "exponential (alpha 0.4)": ema([raw[i] for i in kept]),
                    "One Euro": [results["One Euro"][0][i][0].keypoints for i in kept
                                 if results["One Euro"][0][i]]}
        for name, path in smoothed.items():
            truth_kept = [truth[i] for i in kept][:len(path)]
            row = {"clip": motion, "keypoints": name, "frames": len(frames),
                   "frames without the face": len(frames) - len(kept)}
            if name != "exponential (alpha 0.4)":
                seen, seconds, runs = results[name]
                row.update({"frames/s": round(len(frames) / seconds, 1), "detector runs": runs})
            row["jitter px/frame" if motion == "still" else "mean error px"] = round(
                jitter(path) if motion == "still" else
                float(np.mean([np.linalg.norm(p - q, axis=1).mean()
                               for p, q in zip(path, truth_kept)])), 3)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# dlib, side by side
# --------------------------------------------------------------------------------------------
def compare_with_dlib(pipelines, dlib_pipelines, split="test", frames=None, progress=True):
    """Run this project's pipelines and dlib's on the same faces of ``split``, in this process.

    ``pipelines``/``dlib_pipelines``: {row name: pipeline}. The images are read first (not
    timed); then each system runs over all of them: detection + keypoints (``pipeline ms``),
    and the keypoint step alone per face found (``keypoints ms/face``). A miss is a failure.
    Returns one row per system.
    """
    ds = split_dataset(split, subset=frames)
    samples = [ds[i] for i in range(len(ds))]
    gts = np.array([s["keypoints"] for s in samples])
    grays = [np.ascontiguousarray(cv2.cvtColor(s["image"], cv2.COLOR_RGB2GRAY)) for s in samples]
    systems = {**{k: ("ours", v) for k, v in pipelines.items()},
               **{k: ("dlib", v) for k, v in dlib_pipelines.items()}}
    rows = []
    for name, (kind, system) in systems.items():
        use_threads(system)
        if kind == "ours":
            previous = system.markup
            system.set_markup(markup_for(split, system))
        preds, pipe_ms, step_ms = [], [], []
        for sample, gray in tqdm(list(zip(samples, grays)), desc=name[:30],
                                 disable=not progress or None):
            image, gt = sample["image"], sample["keypoints"]
            t0 = time.perf_counter()
            if kind == "ours":
                found = system.detect(image)
                t1 = time.perf_counter()
                pts, _ = system.keypoints_for(image, found)
                t2 = time.perf_counter()
                j = match_detection(crops_for(found, system.detector, system.crop_scale), gt,
                                    system.crop_scale)
            else:
                rects = system.detect(gray)
                t1 = time.perf_counter()
                pts = [system.keypoints(gray, r) for r in rects]
                t2 = time.perf_counter()
                j = _dlib_match([system.box(r) for r in rects], gt)
            pipe_ms.append(1000 * (t2 - t0))
            if len(pts):
                step_ms.append(1000 * (t2 - t1) / len(pts))
            preds.append(pts[j] if j is not None else np.full((N_KEYPOINTS, 2), np.nan))
        if kind == "ours":
            system.set_markup(previous)
        m = summarize(np.array(preds), gts)
        rows.append({"split": split, "system": name,
                     "faces found": f"{m['faces_found']}/{m['faces']}",
                     "NME mean %": round(100 * m["nme_mean"], 2),
                     "NME median %": round(100 * m["nme_median"], 2),
                     "FR@8 %": round(100 * m["fr@8"], 2), "AUC@8": round(m["auc@8"], 3),
                     "keypoints ms/face": round(statistics.median(step_ms), 2)
                     if step_ms else None,
                     "pipeline ms/image (median)": round(statistics.median(pipe_ms), 1),
                     "pipeline ms/image (mean)": round(float(np.mean(pipe_ms)), 1)})
    use_threads(None)
    return rows


# --------------------------------------------------------------------------------------------
# Does the confidence flag the failures?
# --------------------------------------------------------------------------------------------
def confidence_report(pipe, split="300w_test", protocol="pipeline"):
    """Does the confidence flag the bad fits? Two rules for a bad fit: a failure (NME > 8 %,
    a missed face included) and, since a good model fails rarely, the worst tenth of the faces
    by NME. One row per rule (see ``failures_caught``)."""
    summary, details = evaluate(pipe, split, protocol, progress=False)
    nmes = nme(details["pred"], details["gt"])    # inf for a missed face
    conf = np.where(np.isnan(details["confidence"]), -np.inf, details["confidence"])
    worst = np.zeros(len(nmes), bool)
    worst[np.argsort(-nmes, kind="stable")[:int(np.ceil(0.1 * len(nmes)))]] = True
    rules = {f"failure (NME > {100 * FAIL_THRESHOLD:g} %)": nmes > FAIL_THRESHOLD,
             "worst tenth by NME": worst}
    return [{"split": split, "protocol": protocol, "faces": len(nmes), "bad fit": rule,
             "bad faces": int(bad.sum()), **failures_caught(conf, bad),
             "NME mean % (faces found)": round(100 * summary["nme_mean"], 2)}
            for rule, bad in rules.items()]


def min_confidence_report(pipe, angles=tuple(range(0, 360, 15))):
    """What the default ``min_confidence`` drops (the model's own for the head each set is
    read with, against 0 = every detection): false faces on the face-free pictures and on the
    bundled photo turned every 15 degrees (a box that does not hold the photo's one face is
    false; a real face's fit is good when within 8 % NME of the upright photo's fit, turned),
    and on the test sets upright, a quarter and a half turn, the faces found and the failure
    rate (NME > 8 % or missed: a dropped face whose fit was good would raise it)."""
    rows = []

    def counts(images, truths=None):
        row = {"head (its default)": f"{pipe.markup} ({pipe.min_confidence})"}
        for name, setting in (("0", 0.0), ("the default", None)):
            with pipe.using_min_confidence(setting):
                found = [pipe.find_faces(image) for image in images]
            faces, false, good = 0, [], 0
            for k, per_image in enumerate(found):
                for f in per_image:
                    faces += 1
                    c = None if truths is None else truths[k].mean(axis=0)
                    if c is None or not (f.box[0] <= c[0] <= f.box[0] + f.box[2]
                                         and f.box[1] <= c[1] <= f.box[1] + f.box[3]):
                        false.append(f.confidence)
                    elif nme(f.keypoints[None], truths[k][None])[0] < FAIL_THRESHOLD:
                        good += 1
            row[f"with min_confidence {name}"] = (
                f"{faces} faces: {len(false)} false"
                + (f" (confidence at most {max(false):.3f})" if false else "")
                + (f", {good} real with a good fit" if truths is not None else ""))
        return row

    negatives = [image for _, image in face_free_images()]
    rows.append({"pictures": f"{len(negatives)} face-free pictures (scikit-image, 1x and 2x)",
                 **counts(negatives)})
    photo = load_image(DEFAULT_PHOTO)
    (face,) = pipe.find_faces(photo)
    turned = [rotated(photo, face.keypoints, angle) for angle in angles]
    rows.append({"pictures": f"the bundled photo turned every 15 degrees ({len(angles)} "
                             f"photos, one face each)",
                 **counts([im for im, _ in turned], [kp for _, kp in turned])})
    for split, title in (("test", "course test split"), ("300w_test", "300w_test")):
        for angle in (0, 90, 180):
            row = {}
            for name, setting in (("0", 0.0), ("the default", None)):
                with pipe.using_min_confidence(setting):
                    m, _ = evaluate(pipe, split, "pipeline", degrees=angle, progress=False)
                row[f"with min_confidence {name}"] = (f"{m['faces_found']} faces found, FR@8 "
                                                      f"{100 * m['fr@8']:.2f} %")
            previous = pipe.markup
            pipe.set_markup(markup_for(split, pipe))
            head = f"{pipe.markup} ({pipe.min_confidence})"
            pipe.set_markup(previous)
            rows.append({"pictures": f"{title} turned {angle} degrees ({m['faces']} faces)",
                         "head (its default)": head, **row})
    return rows


# --------------------------------------------------------------------------------------------
# One row per model
# --------------------------------------------------------------------------------------------
def untrained_checkpoint(spec, folder) -> Path:
    """A checkpoint of an untrained model for latency alone: ``spec`` is ``arch:key=value,...``
    (e.g. ``resnet18:width=64``, torchvision's ResNet-18 width; ``input=96`` sets the input
    size, 112 px by default)."""
    arch, _, args = spec.partition(":")
    arch_args = {k: int(v) for k, v in (a.split("=") for a in args.split(",") if a)}
    size = arch_args.pop("input", arch_args.get("input_size", 112))
    if arch in ("heatmap", "net", "pip"):
        arch_args["input_size"] = size
    args_text = "-".join(f"{k}{v}" for k, v in arch_args.items())
    path = Path(folder) / f"untrained-{arch}-{args_text}-{size}.pt"
    save_checkpoint(path, build_model(arch, **arch_args).eval(),
                    checkpoint_meta(arch, arch_args, size, CROP_SCALE, size / 2, size / 4,
                                    command="untrained"))
    return path


def model_row(path, frames=None, progress=True, tmp=None):
    """Parameters, size on disk, latency per face (both back-ends) and pipeline test metrics.

    ``path`` may also be an ``arch:key=value`` spec (see ``untrained_checkpoint``): a model
    not trained here, measured for size and latency only."""
    trained = Path(path).is_file()
    ckpt = Path(path) if trained else untrained_checkpoint(path, tmp or RUNS_DIR)
    row = {"model": str(path)}
    photo = load_image(DEFAULT_PHOTO)
    for backend in ("torch", "onnx"):
        pipe = make_pipeline(ckpt, backend)
        if backend == "torch":
            metrics = pipe.meta.get("metrics", {})
            row.update({"arch": f"{pipe.meta['arch']} {pipe.meta.get('arch_args', {})}",
                        "input px": pipe.size,
                        "parameters (M)": round(count_parameters(pipe.model.model) / 1e6, 2),
                        "MB on disk": round(ckpt.stat().st_size / 1e6, 1),
                        "training min (this run)": metrics.get("train_minutes"),
                        "val NME %": round(100 * metrics["val_nme"], 2)
                        if "val_nme" in metrics else None})
            if trained:
                summary, _ = evaluate(pipe, "test", "pipeline", subset=frames, progress=progress)
        box = pipe.detect(photo).boxes[0]
        step, _ = keypoint_step(pipe, photo, box)
        row[f"{backend} ms/face"] = round(step, 2)
    use_threads(None)
    if trained:
        row.update({"test faces found": f"{summary['faces_found']}/{summary['faces']}",
                    "test NME mean %": round(100 * summary["nme_mean"], 2),
                    "test NME median %": round(100 * summary["nme_median"], 2),
                    "test FR@8 %": round(100 * summary["fr@8"], 2)})
    else:
        ckpt.unlink()
        ckpt.with_suffix(".onnx").unlink(missing_ok=True)  # its export (runtime.onnx_path_for)
        row.update({"test faces found": None, "test NME mean %": None,
                    "test NME median %": None, "test FR@8 %": None})
    return row


def same_faces(a, b) -> bool:
    """Whether two lists of ``Face`` are equal to the bit (boxes, keypoints, scores)."""
    return len(a) == len(b) and all(
        np.array_equal(x.keypoints, y.keypoints) and np.array_equal(x.box, y.box)
        and (x.score, x.confidence, x.roll) == (y.score, y.confidence, y.roll)
        for x, y in zip(a, b))


def shared_threads(model, photos, threads=(1, 2, 8), rounds=3, onnx_threads=(None, 1)):
    """One ``KeypointPipeline`` per detector (and per number of onnxruntime threads,
    ``onnx_threads``; None: the default) shared by a pool of threads over ``photos``: photos
    per second (best of ``rounds``) and whether every call gave exactly its sequential result."""
    rows = []
    for name, inner in itertools.product(("blazeface", "haar"), onnx_threads):
        pipe = make_pipeline(model, "onnx", detector=name, threads=inner)
        want = [pipe.get_landmarks(p) for p in photos]
        for n in threads:
            best, same = 0.0, True
            for _ in range(rounds):
                t0 = time.perf_counter()
                if n == 1:
                    got = [pipe.get_landmarks(p) for p in photos]
                else:
                    with ThreadPoolExecutor(n) as pool:
                        got = list(pool.map(pipe.get_landmarks, photos))
                best = max(best, len(photos) / (time.perf_counter() - t0))
                same &= all(same_faces(g, w) for g, w in zip(got, want))
            rows.append({"detector": name, "onnxruntime threads": inner or ONNX_THREADS,
                         "threads": n, "photos": len(photos),
                         "photos/s": round(best, 1), "same as sequential": same})
    return rows


def speed(args):
    for backend in ("torch", "onnx"):
        pipe = make_pipeline(args.model, backend, args.flip_tta)
        print(f"[{backend}] model {args.model} ({pipe.meta['arch']} "
              f"{pipe.meta['arch_args']}, {pipe.size} px), detector {pipe.detector.name}, torch "
              f"threads {torch.get_num_threads()}{', flip TTA' if args.flip_tta else ''}")
        photo = load_image(DEFAULT_PHOTO)
        boxes = pipe.detect(photo).boxes
        if len(boxes) == 0:
            print("no face found in the bundled photo", file=sys.stderr)
            return 1
        step, forward = keypoint_step(pipe, photo, boxes[0])
        print(f"keypoint step, batch 1: {step:.2f} ms per face (of which the network's forward "
              f"pass {forward:.2f} ms)")
        sets = [("bundled photo", [DEFAULT_PHOTO])]
        course = [COURSE_IMAGES_DIR / n for n in ("obamas.jpg", "the_beatles.jpg",
                                                  "mona_lisa.jpg")]
        if all(p.is_file() for p in course):
            sets.append(("course photos", course))
        if dataset_ready():
            test = split_dataset("test", subset=args.frames)
            sets.append((f"test split ({len(test)} frames)",
                         [DATA_DIR / "test" / f for f in test.filenames]))
        for name, paths in sets:
            median, mean, faces = pipeline_per_image(pipe, paths,
                                                     repeat=3 if len(paths) < 10 else 1)
            print(f"full pipeline, {name}: median {median:.1f} ms, mean {mean:.1f} ms per image "
                  f"({faces} faces in {len(paths)} images)")
    rows = video_benchmark(pipe, args.track_every)
    write_table(rows, args.out, "video", f"Video: a face tracked through 640 x 480 clips "
                f"({shown(args.model)}, ONNX, detector every {args.track_every} frames)")
    use_threads(None)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--frames", type=int, default=None,
                   help="only N frames of each split (default: every one for --dlib and "
                        "--models, 200 for the speed figures)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--track-every", type=int, default=10, help="video: detector every N frames")
    p.add_argument("--dlib", action="store_true",
                   help="compare with dlib on the course test split and 300w_test (needs "
                        "dlib-bin and face-recognition-models)")
    p.add_argument("--splits", nargs="+", default=["test", "300w_test"],
                   choices=["test", "300w_test"], help="with --dlib")
    p.add_argument("--threads-shared", action="store_true",
                   help="one pipeline shared by 1, 2 and 8 threads: photos/s, same results?")
    p.add_argument("--confidence", action="store_true",
                   help="how well the model's confidence flags its failures on 300w_test, "
                        "and what its default min_confidence drops")
    p.add_argument("--models", nargs="+", metavar="CKPT",
                   help="one table row per checkpoint: size, latency, test NME; an "
                        "arch:key=value spec (e.g. resnet18:width=64) adds an untrained "
                        "model's size and latency")
    p.add_argument("--out", default=str(RESULTS_DIR), help="folder for the tables")
    p.add_argument("--name", default="models", help="file name of the --models table")
    args = p.parse_args(argv)
    if args.threads:
        set_torch_threads(args.threads)
    if args.models:
        rows = [model_row(m, args.frames) for m in args.models]
        path = write_table(rows, args.out, args.name, "Models: size, CPU latency per face, "
                           "test NME (full pipeline)")
        print(f"-> {path}")
        return 0
    if args.threads_shared:
        photos = [load_image(DEFAULT_PHOTO)] + [load_image(COURSE_IMAGES_DIR / n) for n in
                                                ("obamas.jpg", "the_beatles.jpg", "mona_lisa.jpg")]
        path = write_table(shared_threads(args.model, photos * 12), args.out, "threads",
                           f"One pipeline shared by threads ({shown(args.model)}, ONNX; the "
                           f"bundled photo and the three course photos, 12 times each; "
                           f"{os.cpu_count()} cores)")
        print(f"-> {path}")
        return 0
    if args.confidence:
        pipe = make_pipeline(args.model, "onnx")
        rows = [row for protocol in ("crop", "pipeline")
                for row in confidence_report(pipe, protocol=protocol)]
        path = write_table(rows, args.out, "confidence", f"Confidence against failures on "
                           f"300w_test ({shown(args.model)})")
        print(f"-> {path}")
        path = write_table(min_confidence_report(pipe), args.out, "min_confidence",
                           f"What the default min_confidence drops ({shown(args.model)})")
        print(f"-> {path}")
        return 0
    if args.dlib:
        try:
            dlib_systems = {f"dlib HOG (upsample {u}) + 68-point predictor": DlibPipeline(u)
                            for u in (0, 1)}
            same_data = same_data_predictor()
            dlib_systems.update({f"dlib HOG (upsample {u}) + dlib's trainer on our faces":
                                 DlibPipeline(u, same_data) for u in (0, 1)})
        except RuntimeError as e:
            print(f"benchmarks.benchmark: error: {e}", file=sys.stderr)
            return 2
        ours = {"this project (torch)": make_pipeline(args.model, "torch", args.flip_tta),
                "this project (onnx, fp32)": make_pipeline(args.model, "onnx", args.flip_tta,
                                                           precision="fp32")}
        onnx = make_pipeline(args.model, "onnx", args.flip_tta)   # what fkp-detect runs
        if onnx.model.precision != "fp32":
            ours[f"this project (onnx, {onnx.model.precision})"] = onnx
        rows = []
        for split in args.splits:
            rows += compare_with_dlib(ours, dlib_systems, split, args.frames)
        path = write_table(rows, args.out, "benchmark_dlib",
                           f"This project against dlib "
                           f"({shown(args.model)}; PyTorch on "
                           f"{ours['this project (torch)'].torch_threads} threads; ONNX: "
                           f"onnxruntime on {ONNX_THREADS} thread(s); {os.cpu_count()} cores)")
        print(f"-> {path}")
        return 0
    args.frames = args.frames or 200
    return speed(args)


if __name__ == "__main__":
    sys.exit(main())
