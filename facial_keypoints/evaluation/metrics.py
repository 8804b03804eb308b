"""Keypoint accuracy metrics: numpy only, no model, no data set.

NME (normalised mean error): the mean distance between predicted and true points divided by
the distance between the outer eye corners (points 36 and 45), per face. Reported as mean and
median, per region, as a cumulative error distribution (CED) with its area under the curve up
to 8 % (AUC@8 %) and the failure rate FR@8 % (share of faces whose NME exceeds 8 %, a face the
detector missed counting as a failure), and as RMSE in pixels.
"""
from __future__ import annotations

import numpy as np

from facial_keypoints.landmarks import LEFT_EYE_OUTER, REGIONS, RIGHT_EYE_OUTER

FAIL_THRESHOLD = 0.08


def interocular(gt):
    """Outer-eye-corner distance per face, for (N, 68, 2) ground truth."""
    gt = np.asarray(gt, dtype=np.float64)
    return np.linalg.norm(gt[:, LEFT_EYE_OUTER] - gt[:, RIGHT_EYE_OUTER], axis=-1)


def point_errors(pred, gt):
    """Per-point error normalised by the outer-eye-corner distance: (N, 68)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and gt must both be (N, 68, 2), got {pred.shape} and {gt.shape}")
    return np.linalg.norm(pred - gt, axis=-1) / interocular(gt)[:, None]


def nme(pred, gt):
    """NME of each face: (N,). A face with a NaN prediction (missed) gets ``inf``."""
    e = point_errors(pred, gt).mean(axis=1)
    return np.where(np.isnan(e), np.inf, e)


def ced_auc(nmes, threshold=FAIL_THRESHOLD, steps=1000):
    """Area under the cumulative error distribution up to ``threshold``, scaled to [0, 1]."""
    nmes = np.asarray(nmes, dtype=np.float64)
    xs = np.linspace(0, threshold, steps + 1)
    ced = (nmes[None, :] <= xs[:, None]).mean(axis=1)
    return float(np.trapezoid(ced, xs) / threshold)


def failure_rate(nmes, threshold=FAIL_THRESHOLD):
    return float((np.asarray(nmes) > threshold).mean())


def summarize(pred, gt):
    """Every metric for predictions ``pred`` (N, 68, 2) against ``gt``, in image pixels.

    Rows of ``pred`` that are NaN are faces that were not found: they count as failures (NME
    ``inf``) and are left out of the mean, median, per-region NME and RMSE, which are over the
    faces found.
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    found = ~np.isnan(pred).any(axis=(1, 2))
    per_face = nme(pred, gt)
    errs = point_errors(pred[found], gt[found])
    sq = ((pred[found] - gt[found]) ** 2).sum(axis=-1)
    out = {
        "faces": int(len(gt)),
        "faces_found": int(found.sum()),
        "found_rate": float(found.mean()) if len(gt) else 0.0,
        "nme_mean": float(errs.mean()) if found.any() else float("nan"),
        "nme_median": float(np.median(errs.mean(axis=1))) if found.any() else float("nan"),
        "auc@8": ced_auc(per_face),
        "fr@8": failure_rate(per_face),
        "rmse_px": float(np.sqrt(sq.mean())) if found.any() else float("nan"),
    }
    for name, idx in REGIONS.items():
        out[f"nme_{name}"] = float(errs[:, list(idx)].mean()) if found.any() else float("nan")
    return out


def format_metrics(m, title=""):
    """A short human-readable block for one ``summarize`` result."""
    lines = [title] if title else []
    lines.append(f"  faces found     {m['faces_found']}/{m['faces']} "
                 f"({100 * m['found_rate']:.1f} %)")
    lines.append(f"  NME mean        {100 * m['nme_mean']:.2f} %   "
                 f"median {100 * m['nme_median']:.2f} %")
    lines.append(f"  AUC@8 %         {m['auc@8']:.3f}      FR@8 % {100 * m['fr@8']:.2f} %")
    lines.append(f"  RMSE            {m['rmse_px']:.2f} px")
    lines.append("  per region NME  "
                 + "  ".join(f"{k} {100 * m['nme_' + k]:.2f} %" for k in REGIONS))
    return "\n".join(lines)
