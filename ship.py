"""Ship a trained model: measure its offsets, its test metrics, and write it with its card.

    python ship.py --model runs/mine/best.pt --dest saved_models/keypoints_resnet18.pt

Measures the model's per-keypoint offsets on its own validation people (``measure_bias``),
then both protocols of ``evaluate.py`` on the test split (and the held-out 300-W crops when
they are there), and writes the checkpoint with these figures to ``--dest`` and
``MODEL_CARD.md`` beside it (``templates/model_card.md``), each atomically.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path
from string import Template

import numpy as np
import torch

from data_300w import split_300w_files
from data_load import crop_face, dataset, keypoint_box, person_split, square_crop_box
from evaluate import PROTOCOL_TITLES, evaluate
from fetch_data import fetch_300w
from landmarks import REGIONS
from metrics import format_metrics
from models import ModelLoadError, read_checkpoint
from pipeline import FaceKeypointDetector
from utils import atomic_path, atomic_torch_save, atomic_write_text

CARD_TEMPLATE = Path(__file__).resolve().parent / "templates" / "model_card.md"


def measure_bias(detector):
    """The model's mean offset of each keypoint (68, 2) in crop pixels on the validation people.

    Measured on ground-truth face crops of the people that the model's own training run held
    out (``data_load.person_split`` with the checkpoint's ``train_config``), never on the test
    split: ``plain`` for the crop as it is, ``mirrored`` for the
    mirrored crop (its prediction, re-indexed, against the mirrored labels x -> size - 1 - x).
    The dataset's mark-up is not mirror-symmetric (a model trained with mirrored faces is off by
    about a pixel to one side on plain faces and to the other on mirrored ones, more on the jaw
    than on the eyes), hence one offset per keypoint. ``pipeline.FaceKeypointDetector``
    subtracts these when the checkpoint carries them.
    """
    train_config = detector.meta.get("train_config") or {}
    _, val_names = person_split(train_config)
    ds = dataset("train", names=val_names, data_dir=train_config.get("data_dir"))
    size, plain, mirrored = detector.size, [], []
    for i in range(len(ds)):
        sample = ds[i]
        crop = square_crop_box(keypoint_box(sample["keypoints"]), detector.crop_scale)
        _, gt = crop_face(sample["image"], crop, size, sample["keypoints"])
        out, flip = detector.crop_predictions(sample["image"], [crop], mirrored=True)
        plain.append(out[0] - gt)
        mirrored.append(flip[0] - np.c_[size - 1 - gt[:, 0], gt[:, 1]])

    def per_point(offsets):
        return np.round(np.mean(offsets, axis=0), 3).tolist()

    return {"plain": per_point(plain), "mirrored": per_point(mirrored), "faces": len(ds),
            "split": f"train, validation people (fraction {train_config.get('val_fraction', 0.1)}, "
                     f"seed {train_config.get('seed', 0)})"}



def ship_model(model_path, dest, results, card_path=None, bias=None, settings=None,
               outside=None, command=None):
    """Copy a checkpoint to ``dest`` with its measured test metrics, and write its model card.

    ``results`` is ``{protocol: summarize(...) result}`` as measured by ``evaluate``. The copy is
    written atomically, so an interrupted run never leaves a half-written shipped model.
    """
    ckpt = read_checkpoint(model_path)
    ckpt["metrics"] = {**ckpt.get("metrics", {}), "test": results,
                       "test_settings": dict(settings or {})}
    if outside:
        ckpt["metrics"]["300w_holdout"] = outside
    if bias is not None:
        ckpt["bias"] = {"plain": bias["plain"], "mirrored": bias["mirrored"]}
    atomic_torch_save(ckpt, dest)
    dest = Path(dest)
    run_dir = Path(ckpt.get("train_config", {}).get("out", ""))
    curves = None
    if run_dir.is_dir() and (run_dir / "curves.png").is_file():
        curves = dest.with_name(dest.stem + "_curves.png")
        for source, target in ((run_dir / "curves.png", curves),
                               (run_dir / "log.csv", dest.with_name(dest.stem + "_log.csv"))):
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
    card_path = Path(card_path or dest.with_name("MODEL_CARD.md"))
    rows = []
    for protocol, title in (("crop", "(a) ground-truth face crops"),
                            ("pipeline", "(b) full pipeline (detection -> crop -> model)")):
        if protocol not in results:
            continue
        m = results[protocol]
        rows.append(f"| {title} | {m['faces_found']}/{m['faces']} | {100 * m['nme_mean']:.2f} | "
                    f"{100 * m['nme_median']:.2f} | {m['auc@8']:.3f} | {100 * m['fr@8']:.2f} | "
                    f"{m['rmse_px']:.2f} | "
                    + " | ".join(f"{100 * m['nme_' + k]:.2f}" for k in REGIONS) + " |")
    cfg = ckpt.get("train_config", {})
    m = ckpt["metrics"]
    header = ("| protocol | faces found | NME mean % | NME median % | AUC@8 | FR@8 % | RMSE px | "
              + " | ".join(k + " %" for k in REGIONS) + " |\n"
              + "| --- " * (7 + len(REGIONS)) + "|\n")
    text = Template(CARD_TEMPLATE.read_text()).substitute(
        name=dest.name, command=command or f"python ship.py --model {model_path} --dest {dest}",
        arch=ckpt["arch"], arch_args=ckpt.get("arch_args", {}), input_size=ckpt["input_size"],
        crop_scale=ckpt.get("crop_scale"), normalization=ckpt["normalization"],
        offset_plain=_mean_offset(ckpt, "plain"), offset_mirrored=_mean_offset(ckpt, "mirrored"),
        test_settings=m.get("test_settings"), size_mb=f"{dest.stat().st_size / 1e6:.1f}",
        val_percent=f"{cfg.get('val_fraction', 0.1):.0%}", extra_data=_extra_data(cfg),
        train_command=ckpt.get("command", "?"), init_history=_init_history(cfg),
        val_nme=f"{100 * m.get('val_nme', float('nan')):.2f}", epoch=m.get("epoch", "?"),
        train_minutes=m.get("train_minutes", "?"),
        machine=f"{platform.machine()}, {os.cpu_count()} CPU cores; torch {torch.__version__}",
        curves=(f"- Curves: `{curves.name}`, per-epoch log: `{dest.stem}_log.csv`."
                if curves else ""),
        test_table=header + "\n".join(rows), outside=_outside_rows(outside), terms=_terms(cfg))
    atomic_write_text(card_path, text)
    return dest, card_path


def _terms(cfg):
    if cfg.get("extra_data") != "300w":
        return ""
    return ("\n\nTerms: the 300-W annotations are licensed for non-commercial research use only; "
            "treat these weights the same way (as dlib does for its own 68-point model, trained "
            "on 300-W). The course data (YouTube Faces frames) is itself a research dataset. "
            "For weights without 300-W, train with the same commands minus `--extra-data 300w`.")


def _extra_data(cfg):
    if cfg.get("extra_data") == "300w":
        return (", plus the training part of the 300-W crops (`data_300w.split_300w`: four "
                "fifths of the photos; the held-out fifth measures faces in the wild)")
    return ""


def _mean_offset(ckpt, kind):
    bias = (ckpt.get("bias") or {}).get(kind)
    if bias is None:
        return None
    return np.round(np.mean(np.reshape(bias, (-1, 2)), axis=0), 3).tolist()


def _init_history(cfg):
    """For a fine-tuned model, the chain of runs its starting weights came from (read from
    those files while they exist), back to the run that trained from scratch."""
    lines, init, seen = [], cfg.get("init"), set()
    while init and init not in seen:
        seen.add(init)
        try:
            parent = read_checkpoint(init)
        except ModelLoadError:
            lines.append(f"- Fine-tuned from `{init}` (that file is not here to describe).")
            break
        m = parent.get("metrics", {})
        how = "fine-tuned in turn" if parent.get("train_config", {}).get("init") else \
            "trained from scratch"
        lines.append(f"- Its starting weights, `{init}`, were {how} by "
                     f"`{parent.get('command', '?')}` ({m.get('train_minutes', '?')} minutes, best "
                     f"validation NME {100 * m.get('val_nme', float('nan')):.2f} % at epoch "
                     f"{m.get('epoch', '?')}).")
        init = parent.get("train_config", {}).get("init")
    return "".join("\n" + line for line in lines)


def _outside_rows(outside):
    if not outside:
        return ""
    rows = [f"| {t} | {m['faces_found']}/{m['faces']} | {100 * m['nme_mean']:.2f} | "
            f"{100 * m['nme_median']:.2f} | {m['auc@8']:.3f} | {100 * m['fr@8']:.2f} |"
            for t, m in (("(a) ground-truth face crops", outside.get("crop")),
                         ("(b) full pipeline", outside.get("pipeline"))) if m]
    return ("\n## Faces from outside the course dataset\nThe held-out fifth of the 300-W crops "
            "(`python evaluate.py --split 300w --holdout`; in-the-wild photos, another mark-up "
            "convention for the nose and jaw):\n\n| protocol | faces found | NME mean % | "
            "NME median % | AUC@8 | FR@8 % |\n| --- | --- | --- | --- | --- | --- |\n"
            + "\n".join(rows) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the checkpoint to ship (train.py's best.pt)")
    p.add_argument("--dest", required=True, help="where to write it, e.g. saved_models/x.pt")
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--refine", type=int, default=1)
    args = p.parse_args(argv)
    try:
        detector = FaceKeypointDetector(args.model, flip_tta=args.flip_tta, refine=args.refine)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bias = measure_bias(detector)
    detector.bias = {k: np.asarray(bias[k]) for k in ("plain", "mirrored")}
    print(f"offsets of the 68 keypoints measured on {bias['faces']} validation faces, "
          f"averaged (crop px): plain {np.mean(bias['plain'], axis=0).round(3)}, mirrored "
          f"{np.mean(bias['mirrored'], axis=0).round(3)}; subtracted from now on")
    results = {}
    for protocol in ("crop", "pipeline"):
        results[protocol], _ = evaluate(detector, "test", protocol)
        print(format_metrics(results[protocol], f"{PROTOCOL_TITLES[protocol]}  [test split]"))
    outside = None
    if fetch_300w(quiet=True) is not None:  # faces from outside the course data
        _, held = split_300w_files()
        outside = {protocol: evaluate(detector, "300w", protocol, names=held)[0]
                   for protocol in ("crop", "pipeline")}
        for protocol, m in outside.items():
            print(format_metrics(m, f"300-W held-out crops ({protocol})"))
    command = "python ship.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    dest, card = ship_model(args.model, args.dest, results, bias=bias, outside=outside,
                            settings={"flip_tta": args.flip_tta, "refine": args.refine},
                            command=command)
    print(f"shipped {dest} and {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
