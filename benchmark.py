"""Speed and accuracy on this machine's CPU, side by side with dlib: prints what it measures.

    python benchmark.py                      # speed: keypoint step, full pipeline, video jitter
    python benchmark.py --dlib               # + this project against dlib on the test split
    python benchmark.py --models a.pt b.pt   # one row per model: size, latency, test NME

* keypoint step: the network on one face crop at batch 1 (crop + normalise + forward + map
  back), per face, median of repeated runs, with the PyTorch and the ONNX back-ends (each set
  up as it runs fastest: ``make_detector``);
* full pipeline: load -> Haar detection -> crops -> model -> keypoints in image pixels, per
  image, on the bundled photo, the course photos (when fetched) and the test split;
* video jitter: a still photo repeated as a video with camera-like noise added to each frame;
  the mean frame-to-frame movement of the keypoints without and with temporal smoothing;
* ``--dlib``: on every frame of the official test split, in this one process, this project's
  pipeline and dlib's (HOG face detector + ``shape_predictor_68_face_landmarks.dat`` from the
  ``face-recognition-models`` package): faces found, NME mean/median, FR@8 %, AUC@8 %, time per
  face of the keypoint step and per image of the whole pipeline. dlib is an optional,
  benchmark-only dependency: ``pip install dlib-bin face-recognition-models``.
* ``--models``: parameters, size on disk, keypoint-step latency (PyTorch and ONNX) and the
  full-pipeline test metrics of each checkpoint (``evaluate.evaluate``).

Tables are printed and written as Markdown and JSON to ``--out`` (default ``results/``).
Timings are wall-clock on whatever else the machine is doing: run it on an idle machine.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from data_load import COURSE_IMAGES_DIR, CROP_SCALE, DATA_DIR, dataset
from detectors import crop_for_box
from evaluate import evaluate, match_detection
from fetch_data import dataset_ready
from images import DEFAULT_PHOTO, load_image
from landmarks import N_KEYPOINTS
from metrics import summarize
from models import DEFAULT_MODEL, build_model, checkpoint_meta, count_parameters, save_checkpoint
from pipeline import FaceKeypointDetector, KeypointSmoother, jitter
from utils import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parent


TORCH_THREADS = torch.get_num_threads()


def make_detector(model, backend, flip_tta=False):
    """``FaceKeypointDetector`` set up as ``detect.py`` runs it: PyTorch on torch's threads;
    for ONNX, torch on one thread (it only crops) and onnxruntime as ``export.OnnxKeypointModel``
    sets it up. ``use_threads(detector)`` restores that set-up."""
    torch.set_num_threads(1 if backend == "onnx" else TORCH_THREADS)
    detector = FaceKeypointDetector(model, flip_tta=flip_tta, backend=backend)
    detector.torch_threads = torch.get_num_threads()
    return detector


def use_threads(system):
    torch.set_num_threads(getattr(system, "torch_threads", TORCH_THREADS))


def time_it(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def keypoint_step(detector, image, box, repeat=200):
    """Median ms for the model on one face (crop + normalise + forward + map back), and for
    the network's forward pass alone."""
    crop = crop_for_box(box, detector.crop_scale)
    for _ in range(10):
        detector.keypoints_for_crops(image, [crop])
    crop_prep = time_it(lambda: detector.keypoints_for_crops(image, [crop]), repeat)
    x = torch.zeros(1, 1, detector.size, detector.size)
    with torch.inference_mode():
        forward = time_it(lambda: detector.model(x), repeat)
    return 1000 * statistics.median(crop_prep), 1000 * statistics.median(forward)


def pipeline_per_image(detector, paths, repeat=1):
    """Median and mean ms per image for the whole pipeline, and the number of faces found."""
    times, faces = [], 0
    for path in paths:
        t = time_it(lambda path=path: detector.get_landmarks(path), repeat)
        times.append(min(t))
        faces += len(detector.get_landmarks(path))
    return 1000 * statistics.median(times), 1000 * float(np.mean(times)), faces


def video_jitter(detector, frames=40, noise=6.0, alpha=0.4, seed=0):
    """Keypoint jitter (px per frame) of a still face seen through a noisy camera."""
    image = load_image(DEFAULT_PHOTO)
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


# --------------------------------------------------------------------------------------------
# dlib, side by side
# --------------------------------------------------------------------------------------------
DLIB_HINT = "pip install dlib-bin face-recognition-models (benchmark-only dependencies)"


def dlib_predictor_path() -> Path:
    """``shape_predictor_68_face_landmarks.dat`` as shipped by ``face-recognition-models``.

    Found without importing that package (its ``__init__`` needs setuptools' pkg_resources).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"dlib's 68-point model is not installed: {DLIB_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / \
        "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall face-recognition-models")
    return path


class DlibPipeline:
    """dlib's HOG face detector and 68-point shape predictor (the setup face_recognition uses).

    ``upsample``: how many times dlib doubles the image before detection (face_recognition's
    default is 1; 0 is faster and misses faces under about 80 px).
    """

    def __init__(self, upsample=0):
        try:
            import dlib
        except ImportError:
            raise RuntimeError(f"dlib is not installed: {DLIB_HINT}") from None
        self.dlib, self.upsample = dlib, upsample
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(dlib_predictor_path()))

    def detect(self, gray) -> list:
        return list(self.detector(gray, self.upsample))

    def keypoints(self, gray, rect) -> np.ndarray:
        shape = self.predictor(gray, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    @staticmethod
    def box(rect) -> np.ndarray:
        return np.array([rect.left(), rect.top(), rect.width(), rect.height()], dtype=np.float64)


def _dlib_match(boxes, gt):
    """The dlib box that covers the labelled face: ``evaluate.match_detection`` with the box
    taken as it is (its centre within a quarter of the face's size of the keypoints' centre,
    its side within a factor 2 of the face's)."""
    return match_detection(boxes, gt, 1.0, {"dx": 0.0, "dy": 0.0, "size": 1.0}, size_factor=2.0)


def compare_with_dlib(detectors, dlib_pipelines, frames=None, progress=True):
    """Run this project's pipelines and dlib's on the same test frames, in this process.

    ``detectors``/``dlib_pipelines``: {row name: pipeline}. The images are read first (not
    timed); then each system runs over all of them: detection + keypoints (``pipeline ms``),
    and the keypoint step alone per face found (``keypoints ms/face``). A miss is a failure.
    Returns one row per system.
    """
    ds = dataset("test", subset=frames)
    samples = [ds[i] for i in range(len(ds))]
    gts = np.array([s["keypoints"] for s in samples])
    grays = [np.ascontiguousarray(s["image"][..., :3].mean(axis=2).astype(np.uint8))
             for s in samples]
    systems = {**{k: ("ours", v) for k, v in detectors.items()},
               **{k: ("dlib", v) for k, v in dlib_pipelines.items()}}
    rows = []
    for name, (kind, system) in systems.items():
        use_threads(system)
        preds, pipe_ms, step_ms = [], [], []
        for sample, gray in tqdm(list(zip(samples, grays)), desc=name[:30], disable=not progress):
            image, gt = sample["image"], sample["keypoints"]
            t0 = time.perf_counter()
            if kind == "ours":
                boxes = system.detect_faces(image)
                t1 = time.perf_counter()
                pts = system.keypoints_for_boxes(image, boxes)
                t2 = time.perf_counter()
                j = match_detection(boxes, gt, system.crop_scale)
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
        m = summarize(np.array(preds), gts)
        rows.append({"system": name, "faces found": f"{m['faces_found']}/{m['faces']}",
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
# One row per model
# --------------------------------------------------------------------------------------------
def untrained_checkpoint(spec, folder) -> Path:
    """A checkpoint of an untrained model for latency alone: ``spec`` is ``arch:key=value,...``
    (e.g. ``resnet18:width=64``, torchvision's ResNet-18 width; ``input=96`` sets the input
    size, 112 px by default)."""
    arch, _, args = spec.partition(":")
    arch_args = {k: int(v) for k, v in (a.split("=") for a in args.split(",") if a)}
    size = arch_args.pop("input", arch_args.get("input_size", 112))
    if arch in ("heatmap", "net"):
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
    ckpt = Path(path) if trained else untrained_checkpoint(path, tmp or ROOT / "runs")
    row = {"model": str(path)}
    photo = load_image(DEFAULT_PHOTO)
    for backend in ("torch", "onnx"):
        det = make_detector(ckpt, backend)
        if backend == "torch":
            metrics = det.meta.get("metrics", {})
            row.update({"arch": f"{det.meta['arch']} {det.meta.get('arch_args', {})}",
                        "input px": det.size,
                        "parameters (M)": round(count_parameters(det.model) / 1e6, 2),
                        "MB on disk": round(ckpt.stat().st_size / 1e6, 1),
                        "training min (this run)": metrics.get("train_minutes"),
                        "val NME %": round(100 * metrics["val_nme"], 2)
                        if "val_nme" in metrics else None})
            if trained:
                summary, _ = evaluate(det, "test", "pipeline", subset=frames, progress=progress)
        box = det.detect_faces(photo)[0]
        step, _ = keypoint_step(det, photo, box)
        row[f"{backend} ms/face"] = round(step, 2)
    use_threads(None)
    if trained:
        row.update({"test faces found": f"{summary['faces_found']}/{summary['faces']}",
                    "test NME mean %": round(100 * summary["nme_mean"], 2),
                    "test NME median %": round(100 * summary["nme_median"], 2),
                    "test FR@8 %": round(100 * summary["fr@8"], 2)})
    else:
        ckpt.unlink()
        ckpt.with_suffix(".onnx").unlink(missing_ok=True)  # its export (export.onnx_path_for)
        row.update({"test faces found": None, "test NME mean %": None,
                    "test NME median %": None, "test FR@8 %": None})
    return row


def write_table(rows, out_dir, name, title):
    """Print ``rows`` as a table and write ``<name>.md`` and ``<name>.json`` to ``out_dir``."""
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in cols) + " |"
              for r in rows]
    md = f"# {title}\n\n" + "\n".join(lines) + "\n"
    atomic_write_text(out_dir / f"{name}.md", md)
    atomic_write_json(out_dir / f"{name}.json", rows)
    return out_dir / f"{name}.md"


def speed(args):
    for backend in ("torch", "onnx"):
        detector = make_detector(args.model, backend, args.flip_tta)
        print(f"[{backend}] model {args.model} ({detector.meta['arch']} "
              f"{detector.meta['arch_args']}, {detector.size} px), torch threads "
              f"{torch.get_num_threads()}{', flip TTA' if args.flip_tta else ''}")
        photo = load_image(DEFAULT_PHOTO)
        boxes = detector.detect_faces(photo)
        if len(boxes) == 0:
            print("no face found in the bundled photo", file=sys.stderr)
            return 1
        step, forward = keypoint_step(detector, photo, boxes[0])
        print(f"keypoint step, batch 1: {step:.2f} ms per face (of which the network's forward "
              f"pass {forward:.2f} ms)")
        sets = [("bundled photo", [DEFAULT_PHOTO])]
        course = [COURSE_IMAGES_DIR / n for n in ("obamas.jpg", "the_beatles.jpg",
                                                             "mona_lisa.jpg")]
        if all(c.is_file() for c in course):
            sets.append(("course photos", course))
        if dataset_ready():
            test = dataset("test", subset=args.frames)
            sets.append((f"test split ({len(test)} frames)",
                         [DATA_DIR / "test" / f for f in test.filenames]))
        for name, paths in sets:
            median, mean, faces = pipeline_per_image(detector, paths,
                                                     repeat=3 if len(paths) < 10 else 1)
            print(f"full pipeline, {name}: median {median:.1f} ms, mean {mean:.1f} ms per image "
                  f"({faces} faces in {len(paths)} images)")
    raw, smooth, n = video_jitter(detector)
    print(f"video jitter on a still face with camera noise ({n} frames): "
          f"{raw:.2f} px/frame raw, {smooth:.2f} px/frame smoothed "
          f"({100 * (1 - smooth / raw):.0f} % less)" if raw else "video jitter: no face tracked")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--frames", type=int, default=None,
                   help="only N test frames (default: the whole test split for --dlib and "
                        "--models, 200 for the speed figures)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--dlib", action="store_true",
                   help="compare with dlib on the test split (needs dlib-bin and "
                        "face-recognition-models)")
    p.add_argument("--models", nargs="+", metavar="CKPT",
                   help="one table row per checkpoint: size, latency, test NME; an "
                        "arch:key=value spec (e.g. resnet18:width=64) adds an untrained "
                        "model's size and latency")
    p.add_argument("--out", default=str(ROOT / "results"), help="folder for the tables")
    p.add_argument("--name", default="models", help="file name of the --models table")
    args = p.parse_args(argv)
    global TORCH_THREADS
    if args.threads:
        TORCH_THREADS = args.threads
        torch.set_num_threads(args.threads)
    if args.models:
        rows = [model_row(m, args.frames) for m in args.models]
        path = write_table(rows, args.out, args.name, "Models: size, CPU latency per face, "
                           "test NME (full pipeline)")
        print(f"-> {path}")
        return 0
    if args.dlib:
        try:
            dlib_systems = {f"dlib HOG (upsample {u}) + 68-point predictor": DlibPipeline(u)
                            for u in (0, 1)}
        except RuntimeError as e:
            print(f"benchmark.py: error: {e}", file=sys.stderr)
            return 2
        ours = {f"this project ({b})": make_detector(args.model, b, args.flip_tta)
                for b in ("torch", "onnx")}
        rows = compare_with_dlib(ours, dlib_systems, args.frames)
        path = write_table(rows, args.out, "benchmark_dlib",
                           f"This project against dlib on the official test split "
                           f"({args.model}; PyTorch on {TORCH_THREADS} threads; ONNX: "
                           f"torch on 1 thread; {os.cpu_count()} cores)")
        print(f"-> {path}")
        return 0
    args.frames = args.frames or 200
    return speed(args)


if __name__ == "__main__":
    sys.exit(main())
