"""Any face, any tilt: face detectors and the whole pipeline side by side, upright and turned.

    python -m benchmarks.benchmark_detection  # every table below -> results/detection_*.md
    python -m benchmarks.benchmark_detection --subset 100  # a quick look
    python -m benchmarks.benchmark_detection --part speed  # the speed table alone (an idle machine)
    python -m benchmarks.benchmark_detection --part roll   # where turned faces go wrong
    python -m benchmarks.benchmark_detection --part misses # missed faces, and what finds them
    python -m benchmarks.benchmark_detection --part nme    # the pipeline at every angle
    python -m benchmarks.benchmark_detection --haar-variants # the Haar set-ups of notebook 3

* faces found: the course test split, ``300w_test`` (300-W test photos) and the held-out fifth
  of the 300-W training photos, each upright and turned by ±30, ±60, ±90 and 180 degrees (the
  image turned on a canvas grown to fit, the labels with it: ``evaluate.rotated``); a face is
  found when a detection gives a crop near the labelled face's (``evaluate.match_detection``);
* NME through the whole pipeline at each angle (``evaluate.evaluate``, protocol "pipeline");
* turned faces (``roll_table``): faces found, NME, failures and wrong rolls at each angle,
  before and now, also on group photos (held-out and test faces pasted five to a photo), on
  AFW's yawed faces in crops and in their whole photos (training faces), and for the faces
  turned sideways alone; how well the confidence flags the failures; what the turned-face
  steps cost per course frame;
* false boxes on face-free pictures bundled with scikit-image (at 1x and 2x);
* milliseconds per photo of the detector alone, photos up to 1280 px (BlazeFace on each
  runtime installed: LiteRT and OpenCV's dnn).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial

import cv2
import numpy as np
import skimage.data
from tqdm import tqdm

from benchmarks.common import (
    face_free_images,
    failures_caught,
    make_pipeline,
    shown,
    write_table,
)
from facial_keypoints.detection import DETECTORS
from facial_keypoints.detection.base import crops_for
from facial_keypoints.detection.blazeface import BlazeFaceDetector, installed_runtimes
from facial_keypoints.detection.haar import HaarFaceDetector
from facial_keypoints.evaluation.evaluate import (
    detection_rates,
    evaluate,
    holdout_names,
    markup_for,
    match_detection,
    rotated,
    split_dataset,
)
from facial_keypoints.evaluation.metrics import FAIL_THRESHOLD, nme
from facial_keypoints.filters.face_geometry import head_pose
from facial_keypoints.geometry import CROP_SCALE, eye_roll, wrap_degrees
from facial_keypoints.images import as_rgb_array, load_image
from facial_keypoints.keypoints.pipeline import KeypointPipeline
from facial_keypoints.paths import COURSE_IMAGES_DIR, DEFAULT_MODEL, DEFAULT_PHOTO, RESULTS_DIR

ANGLES = (0, 30, -30, 60, -60, 90, -90, 180)


def face_sets(subset=None):
    """{name: (split, names)}: the sets whose faces are counted."""
    return {"course test split": ("test", None), "300w_test": ("300w_test", None),
            "300-W held-out fifth": ("300w", holdout_names())}


def recall_table(detectors, subset=None, angles=ANGLES, progress=True):
    """Faces found (%) by each detector on each set at each angle."""
    rows = []
    for set_name, (split, names) in face_sets().items():
        ds = split_dataset(split, subset=subset, names=names)
        samples = [(s["image"], s["keypoints"]) for s in (ds[i] for i in range(len(ds)))]
        for name, det in detectors.items():
            row = {"set": set_name, "detector": name, "faces": len(samples)}
            for angle in tqdm(angles, desc=f"{name} {set_name}", disable=not progress or None):
                r = detection_rates(det, (rotated(im, gt, angle) for im, gt in samples))
                row[f"{angle:+d}°" if angle else "0°"] = round(100 * r["found_rate"], 2)
            rows.append(row)
    return rows


def nme_table(model, subset=None, angles=ANGLES, progress=True):
    """NME (%) and faces found through the whole pipeline (BlazeFace) at each angle."""
    pipe = make_pipeline(model, "onnx")
    rows = []
    for set_name, (split, names) in face_sets().items():
        row = {"set": set_name}
        for angle in tqdm(angles, desc=f"pipeline {set_name}", disable=not progress or None):
            m, _ = evaluate(pipe, split, "pipeline", subset, progress=False, names=names,
                            degrees=angle)
            key = f"{angle:+d}°" if angle else "0°"
            row[f"NME {key}"] = round(100 * m["nme_mean"], 2)
            row[f"found {key}"] = f"{m['faces_found']}/{m['faces']}"
        rows.append(row)
    return rows


#: A face counts as turned sideways (yawed) from this yaw on (``face_geometry.head_pose`` of
#: its labels, in the picture it was labelled in): about a quarter of the 300-W faces.
YAWED = 25.0


def labelled_photos(split, names=None, subset=None):
    """The faces of a split as photos: [(image, [labels (68, 2)], [yaw])], one photo per
    picture (``300w_afw_photos``: several faces per photo)."""
    ds = split_dataset(split, subset=subset, names=names)
    photos = {}
    for i in range(len(ds)):
        s = ds[i]
        gt = np.asarray(s["keypoints"], dtype=np.float64)
        image, faces, yaws = photos.setdefault(ds.filenames[i], (s["image"], [], []))
        faces.append(gt)
        yaws.append(head_pose(gt, image.shape)[0])
    return list(photos.values())


def group_photos(split, names=None, subset=None, per_photo=5, size=(800, 600),
                 widths=(50, 110), seed=0):
    """The faces of a split's crops as group photos: ``per_photo`` crops pasted into each
    ``size`` picture (a plain background of a random colour), one per cell of a 3 x 2 grid, each
    shrunk so that its face is ``widths`` pixels wide (the span of its labels), at a random
    place in its cell. [(image, [labels], [yaw])]; the yaw is the crop's own."""
    rng = np.random.default_rng(seed)
    crops = labelled_photos(split, names, subset)
    order = rng.permutation(len(crops))
    w, h = size
    cell_w, cell_h = w // 3, h // 2
    photos = []
    for start in range(0, len(order), per_photo):
        canvas = np.empty((h, w, 3), np.uint8)
        canvas[:] = rng.integers(60, 200, 3)
        faces, yaws = [], []
        cells = rng.permutation(6)
        for cell, k in zip(cells, order[start:start + per_photo]):
            image, (gt,), (yaw,) = crops[k]
            scale = rng.uniform(*widths) / np.ptp(gt[:, 0])
            side = int(round(image.shape[1] * scale))
            small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
            x0 = (cell % 3) * cell_w + int(rng.integers(0, max(cell_w - side, 0) + 1))
            y0 = (cell // 3) * cell_h + int(rng.integers(0, max(cell_h - side, 0) + 1))
            cut_w, cut_h = min(side, w - x0), min(side, h - y0)
            canvas[y0:y0 + cut_h, x0:x0 + cut_w] = small[:cut_h, :cut_w]
            faces.append((gt + 0.5) * (side / image.shape[1]) - 0.5 + [x0, y0])
            yaws.append(yaw)
        photos.append((canvas, faces, yaws))
    return photos


def roll_sets(subset=None):
    """{name: (photos, markup split)}: the sets of the roll tables. The course test split,
    ``300w_test`` and the 300-W held-out fifth (crops, one face each, as in the other tables);
    the held-out fifth and ``300w_test`` in group photos (``group_photos``: small faces, five
    to a photo); AFW's faces in crops and in their whole photos (training faces, many turned
    sideways: for finding detector and roll problems, not for accuracy)."""
    holdout = holdout_names()
    return {"course test split": (labelled_photos("test", subset=subset), "test"),
            "300w_test": (labelled_photos("300w_test", subset=subset), "300w_test"),
            "300-W held-out fifth": (labelled_photos("300w", holdout, subset), "300w"),
            "300-W held-out fifth, group photos": (group_photos("300w", holdout, subset), "300w"),
            "300w_test, group photos": (group_photos("300w_test", subset=subset), "300w_test"),
            "300w_afw (training crops)": (labelled_photos("300w_afw", subset=subset), "300w_afw"),
            "300w_afw_photos (training faces, whole photos)":
                (labelled_photos("300w_afw_photos", subset=subset), "300w_afw_photos")}


def photo_fits(pipe, photos, degrees):
    """Every labelled face of ``photos`` turned by ``degrees`` through the whole pipeline
    (``KeypointPipeline.image_fits``, as ``find_faces`` finds faces, every fit kept), matched
    by the square it was first cut from (``evaluate.match_detection``): (predictions (N, 68,
    2), NaN where missed; labels; raw confidences; yaws; seconds per photo)."""
    preds, gts, raw, yaws, seconds = [], [], [], [], []
    for image, faces, face_yaws in photos:
        turned, _ = rotated(image, faces[0], degrees)
        t0 = time.perf_counter()
        fits = pipe.image_fits(turned)
        seconds.append(time.perf_counter() - t0)
        for gt, yaw in zip(faces, face_yaws):
            _, gt = rotated(image, gt, degrees)
            j = match_detection(fits.squares, gt, pipe.crop_scale)
            preds.append(np.full_like(gt, np.nan) if j is None else fits.keypoints[j])
            raw.append(np.nan if j is None else fits.raw[j])
            gts.append(gt)
            yaws.append(yaw)
    return np.array(preds), np.array(gts), np.array(raw), np.array(yaws), seconds


#: The pipelines the roll tables compare: without this project's turned-face steps (one retry,
#: half a turn, of a doubtful fit; no second search of a turned photo) and as shipped.
ROLL_PIPELINES = {"before (half-turn retry only)": {"retry_turns": (180,), "roll_search": None},
                  "now": {}}


def roll_cell(pred, gt):
    """found / NME % of the fits / FR@8 % of the fits / fits with a roll > 30 degrees off."""
    found = np.isfinite(pred).all(axis=(1, 2))
    errors = nme(pred[found], gt[found])
    off = sum(abs(wrap_degrees(eye_roll(p) - eye_roll(g))) > 30
              for p, g in zip(pred[found], gt[found]))
    return {"found": int(found.sum()), "faces": len(gt),
            "NME %": round(100 * float(errors.mean()), 2) if found.any() else None,
            "FR@8 % of fits": round(100 * float(np.mean(errors > FAIL_THRESHOLD)), 2)
            if found.any() else None, "roll > 30° off": int(off)}


def roll_table(model, subset=None, angles=ANGLES, progress=True):
    """Where turned faces go wrong, and what this project's turned-face steps mend: each set
    at each angle through the whole pipeline (BlazeFace, ``min_confidence`` 0: every fit
    counts) before and now (``ROLL_PIPELINES``); each cell ``found · NME · FR@8 · roll off``
    (``roll_cell``), and the same for the faces turned sideways (|yaw| >= ``YAWED``). Also, per
    set and pipeline over every angle, how well the confidence flags the failing fits
    (``common.failures_caught``, and the fits on either side of 0.5): (rows, flag rows,
    records)."""
    pipes = {name: KeypointPipeline(model, min_confidence=0.0, **settings)
             for name, settings in ROLL_PIPELINES.items()}
    rows, flags, records = [], [], []
    for set_name, (photos, split) in roll_sets(subset).items():
        kinds = {set_name: None}
        if not set_name.startswith("course"):
            kinds[f"{set_name}, yaw ≥ {YAWED:.0f}°"] = YAWED
        results = {}
        for pipe_name, pipe in pipes.items():
            pipe.set_markup(markup_for(split, pipe))
            for angle in tqdm(angles, desc=f"{pipe_name[:6]} {set_name}",
                              disable=not progress or None):
                results[pipe_name, angle] = photo_fits(pipe, photos, angle)
        for kind, yawed in kinds.items():
            for pipe_name in pipes:
                row = {"set": kind, "pipeline": pipe_name}
                for angle in angles:
                    pred, gt, _, yaws, seconds = results[pipe_name, angle]
                    keep = np.ones(len(gt), bool) if yawed is None else np.abs(yaws) >= yawed
                    cell = roll_cell(pred[keep], gt[keep])
                    records.append({"set": kind, "pipeline": pipe_name, "angle": angle, **cell,
                                    "ms per photo": round(1000 * float(np.mean(seconds)), 2)})
                    row[f"{angle:+d}°" if angle else "0°"] = \
                        f"{cell['found']}/{cell['faces']} · {cell['NME %']} · " \
                        f"{cell['FR@8 % of fits']} · {cell['roll > 30° off']}"
                rows.append(row)
        for pipe_name, pipe in pipes.items():
            confidence, failed = [], []
            for angle in angles:
                pred, gt, raw, _, _ = results[pipe_name, angle]
                found = np.isfinite(pred).all(axis=(1, 2))
                confidence.append(pipe.calibrated(raw[found]))
                failed.append(nme(pred[found], gt[found]) > FAIL_THRESHOLD)
            confidence, failed = np.concatenate(confidence), np.concatenate(failed)
            flags.append({"set": set_name, "pipeline": pipe_name,
                          "fits (every angle)": len(failed),
                          "failures (NME > 8 %)": int(failed.sum()),
                          "failures below 0.5": int((failed & (confidence < 0.5)).sum()),
                          "good fits below 0.5": int((~failed & (confidence < 0.5)).sum()),
                          **failures_caught(confidence, failed)})
    return rows, flags, records


def roll_speed(model, rounds=3):
    """ms per course test frame (decoded; detection, keypoints and the turned-face steps) for
    the pipelines of ``ROLL_PIPELINES`` at ``min_confidence`` as shipped, measured in turns
    (each frame's best of ``rounds``); and per group photo of the held-out fifth turned by 60
    degrees (where the steps do their work)."""
    pipes = {name: KeypointPipeline(model, **settings) for name, settings in ROLL_PIPELINES.items()}
    sets = {"course test frame": ([p[0] for p in labelled_photos("test")], "test"),
            "held-out group photo turned 60°": ([rotated(p[0], p[1][0], 60)[0] for p in
                                                 group_photos("300w", holdout_names())], "300w")}
    rows = []
    for set_name, (images, split) in sets.items():
        best = {name: np.full(len(images), np.inf) for name in pipes}
        for _ in range(rounds):
            for name, pipe in pipes.items():
                pipe.set_markup(markup_for(split, pipe))
                for k, image in enumerate(images):
                    t0 = time.perf_counter()
                    pipe.find_faces(image)
                    best[name][k] = min(best[name][k], time.perf_counter() - t0)
        for name in pipes:
            rows.append({"images": f"{set_name} ({len(images)})", "pipeline": name,
                         "ms median": round(1000 * float(np.median(best[name])), 2),
                         "ms mean": round(1000 * float(np.mean(best[name])), 2)})
    return rows


class Tiled:
    """A detector run on the whole image and on its four quarters (each enlarged by the
    detector's own letterboxing: a small face gets twice the pixels), the quarters overlapping
    by ``overlap`` of their side; the boxes merged (OpenCV's NMS at IoU 0.3)."""

    def __init__(self, detector, overlap=0.25):
        self.detector, self.overlap = detector, overlap
        self.name, self.calibration = detector.name, detector.calibration

    def __call__(self, image):
        h, w = image.shape[:2]
        th, tw = int(h / 2 * (1 + self.overlap)), int(w / 2 * (1 + self.overlap))
        parts = [(0, 0, image)] + [(x, y, image[y:y + th, x:x + tw])
                                   for y in (0, h - th) for x in (0, w - tw)]
        boxes, scores, points = [], [], []
        for x, y, part in parts:
            found = self.detector(np.ascontiguousarray(part))
            boxes.append(found.boxes + [x, y, 0, 0])
            scores.append(found.scores)
            points.append(found.points + [x, y])
        boxes, scores, points = np.concatenate(boxes), np.concatenate(scores), \
            np.concatenate(points)
        keep = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), 0.0, 0.3),
                          dtype=int).reshape(-1)
        return type(found)(boxes[keep], scores[keep], points[keep])


def miss_kind(gt):
    """What a labelled face is like: small (under 40 px between its jaw ends), turned
    sideways (the nose tip three times nearer one outer eye corner than the other), or
    neither."""
    width = float(np.ptp(gt[:, 0]))
    left, right = (abs(gt[30, 0] - gt[i, 0]) for i in (36, 45))
    if width < 40:
        return "small (< 40 px)"
    if max(left, right) > 3 * max(min(left, right), 1e-6):
        return "turned sideways"
    return "other"


def misses_table(subset=None):
    """The upright faces of AFW's whole photos that BlazeFace misses (``300w_afw_photos``,
    training faces): what kinds they are, and whether its full-range model alone, a lower
    score threshold or a second pass on the photo's quarters (``Tiled``) finds them, against
    the false boxes each gives on the face-free pictures."""
    ds = split_dataset("300w_afw_photos", subset=subset)
    samples = [(ds[i]["image"], ds[i]["keypoints"]) for i in range(len(ds))]
    negatives = [image for _, image in face_free_images()]
    base = BlazeFaceDetector()
    variants = {"BlazeFace (auto, the default)": base,
                "full-range model alone": BlazeFaceDetector(model="full"),
                "score threshold 0.3": BlazeFaceDetector(score_threshold=0.3),
                "whole photo and its four quarters": Tiled(base)}
    hits = {}
    for name, det in variants.items():
        hits[name] = [match_detection(crops_for(det(im), det, CROP_SCALE), gt, CROP_SCALE)
                      is not None for im, gt in samples]
    missed = [k for k, hit in enumerate(hits["BlazeFace (auto, the default)"]) if not hit]
    kinds = [miss_kind(samples[k][1]) for k in missed]
    rows = []
    for name, det in variants.items():
        row = {"detector": name, "faces found (of %d)" % len(samples): int(sum(hits[name])),
               f"of the default's {len(missed)} misses, found": int(sum(hits[name][k]
                                                                      for k in missed))}
        for kind in sorted(set(kinds)):
            of_kind = [k for k, c in zip(missed, kinds) if c == kind]
            row[f"misses {kind}: found"] = f"{sum(hits[name][k] for k in of_kind)}/{len(of_kind)}"
        row["false boxes on the 44 face-free pictures"] = int(sum(len(det(im))
                                                                  for im in negatives))
        rows.append(row)
    return rows


def false_boxes(detectors):
    negatives = list(face_free_images())
    return [{"detector": name, "face-free pictures": len(negatives),
             "false boxes": int(sum(len(det(img)) for _, img in negatives))}
            for name, det in detectors.items()]


def speed_photos():
    """Photos of up to 1280 px: the bundled portrait at 1280 px, the course photos shrunk to
    fit 1280 px, and a 1280 x 960 picture without a face."""
    photos = {"portrait 1280 x 1280": cv2.resize(load_image(DEFAULT_PHOTO), (1280, 1280))}
    for name in ("obamas.jpg", "the_beatles.jpg", "mona_lisa.jpg"):
        if (COURSE_IMAGES_DIR / name).is_file():
            image = load_image(COURSE_IMAGES_DIR / name)
            k = min(1.0, 1280 / max(image.shape[:2]))
            image = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
            photos[f"{name} {image.shape[1]} x {image.shape[0]}"] = image
    photos["no face 1280 x 960"] = cv2.resize(as_rgb_array(skimage.data.coffee()), (1280, 960))
    return photos


def speed_table(makers, repeat=20, threads=(1, cv2.getNumberOfCPUs())):
    """ms per photo (median of ``repeat``) and faces found, for each detector (made by
    ``makers[name]()``) with each number of threads (the last: OpenCV's default, as
    ``detect.py`` runs; BlazeFace's LiteRT runtime takes OpenCV's number)."""
    rows = []
    photos = speed_photos()
    for name, make in makers.items():
        for n in dict.fromkeys(threads):
            cv2.setNumThreads(n)
            rows.append(_speed_row(name, make(), n, photos, repeat))
    cv2.setNumThreads(threads[0])
    return rows


def speed_makers():
    """The detectors of the speed table: BlazeFace on each runtime installed, and Haar."""
    makers = {f"blazeface ({runtime})": partial(BlazeFaceDetector, runtime=runtime)
              for runtime in installed_runtimes()}
    return {**makers, "haar": HaarFaceDetector}


def _speed_row(name, det, threads, photos, repeat):
    row = {"detector": name, "threads": threads}
    for photo_name, image in photos.items():
        det(image)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            found = det(image)
            times.append(time.perf_counter() - t0)
        row[f"{photo_name}: ms"] = round(1000 * statistics.median(times), 1)
        row[f"{photo_name}: faces"] = len(found)
    return row


def haar_variants():
    """The Haar set-ups of notebook 3: the course's plain call, then the project's."""
    plain = HaarFaceDetector(work_min=1, work_max=10**9, pad=0.0, min_face=0.0)
    return {
        "plain frontalface_default (course)": plain,
        "HaarFaceDetector (working size + border padding)": HaarFaceDetector(),
        "+ alt2 cascade": HaarFaceDetector(frontal=("haarcascade_frontalface_default.xml",
                                                    "haarcascade_frontalface_alt2.xml")),
        "+ profile cascade (and mirrored)": HaarFaceDetector(profile=True),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--subset", type=int, default=None, help="only N faces of each set")
    p.add_argument("--haar-variants", action="store_true",
                   help="compare the Haar set-ups of notebook 3 instead (upright faces)")
    p.add_argument("--part", choices=("all", "speed", "accuracy", "nme", "roll", "misses"),
                   default="all",
                   help="only the speed table, or only the others (nme: the pipeline's table "
                        "alone, not the detectors'); speed, roll and all time things: run them "
                        "on an idle machine")
    p.add_argument("--out", default=str(RESULTS_DIR))
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    if args.haar_variants:
        detectors = haar_variants()
        write_table(recall_table(detectors, args.subset, angles=(0,)), args.out,
                    "detection_haar", "Haar set-ups: faces found (%), upright")
        write_table(false_boxes(detectors), args.out, "detection_haar_false",
                    "Haar set-ups: false boxes on face-free pictures")
        return 0
    if args.part in ("all", "roll"):
        rows, flags, records = roll_table(args.model, args.subset)
        write_table(rows, args.out, "detection_roll",
                    f"Turned faces through the whole pipeline (BlazeFace, {shown(args.model)}, "
                    f"min_confidence 0), before and now: each cell is faces found · NME % of "
                    f"the fits · FR@8 % of the fits · fits with a roll more than 30° off")
        write_table(records, args.out, "detection_roll_cells",
                    "The cells of detection_roll.md one by one, with ms per photo")
        write_table(flags, args.out, "detection_roll_confidence",
                    f"Does the confidence flag the failures of turned faces? Every fit of "
                    f"detection_roll.md, all angles of a set together ({shown(args.model)})")
        write_table(roll_speed(args.model), args.out, "detection_roll_speed",
                    "The cost of the turned-face steps: ms per image (each image's best of 3, "
                    "the two pipelines in turns), min_confidence as shipped")
    if args.part in ("all", "misses"):
        write_table(misses_table(args.subset), args.out, "detection_misses",
                    "The upright faces of AFW's whole photos that BlazeFace misses (training "
                    "faces): their kinds, and what finds them")
    if args.part in ("all", "accuracy", "nme"):
        write_table(nme_table(args.model, args.subset), args.out, "detection_nme",
                    f"The whole pipeline (BlazeFace, {shown(args.model)}): NME % and "
                    f"faces found, upright and turned")
    if args.part in ("roll", "misses", "nme"):
        return 0
    detectors = {name: make() for name, make in DETECTORS.items()}
    if args.part in ("all", "speed"):
        write_table(speed_table(speed_makers()), args.out, "detection_speed",
                    "Face detectors: ms per photo (median of 20) with one thread and with "
                    "OpenCV's default number (as detect.py runs), and faces found")
    if args.part == "speed":
        return 0
    write_table(false_boxes(detectors), args.out, "detection_false",
                "Face detectors: false boxes on face-free pictures (scikit-image, 1x and 2x)")
    write_table(recall_table(detectors, args.subset), args.out, "detection_recall",
                "Face detectors: faces found (%) upright and turned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
