"""The model's confidence as a probability of a good fit (measured by
``evaluation.calibration``, carried in the checkpoint, applied by ``KeypointPipeline``).

The network's raw confidence (the mean peak probability of its heatmaps) is mapped by a
non-decreasing curve of its logarithm, fitted by isotonic regression: the calibration's
``log_raw`` knots and the ``probability`` at each, joined by straight lines and flat beyond the
ends.
"""
from __future__ import annotations

import numpy as np

#: A raw confidence is never taken below this value (the logarithm of zero).
RAW_FLOOR = 1e-6


def probability(raw, calibration):
    """Raw confidences mapped by a ``calibration`` ({"log_raw", "probability"} knots) to the
    probability of a good fit; NaN stays NaN."""
    raw = np.asarray(raw, dtype=np.float64)
    p = np.interp(np.log(np.maximum(np.nan_to_num(raw, nan=1.0), RAW_FLOOR)),
                  calibration["log_raw"], calibration["probability"])
    return np.where(np.isnan(raw), np.nan, p)
