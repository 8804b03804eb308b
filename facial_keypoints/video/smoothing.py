"""Measuring smoothers on simulated clips: ``jitter``, ``lag``, ``delay``, ``simulate_clip``
and ``tune_one_euro`` (which chose ``one_euro.DEFAULT_ONE_EURO``).
"""
from __future__ import annotations

import numpy as np

from facial_keypoints.landmarks import FACE_LAYOUT
from facial_keypoints.video.one_euro import OneEuroFilter
from facial_keypoints.video.tracker import face_size

# ------------------------------------------------------------------------------------------
# Measurement and tuning
# ------------------------------------------------------------------------------------------
# One frontal face's 68 points (iBUG order), used to simulate clips.
_TEMPLATE = np.array(FACE_LAYOUT, dtype=np.float64)


MOTIONS = ("still", "drift", "ramp_step", "sine")


def simulate_clip(motion="still", frames=150, fps=30.0, size=100.0, noise=1.0, seed=0,
                  center=(320.0, 240.0), speed=0.25, step=0.3, amplitude=0.3, period=2.0,
                  drift=0.05):
    """A face on a known path, and the same path seen with Gaussian noise.

    ``motion``: ``"still"``; ``"drift"`` (moving right slowly, ``drift`` face sizes per
    second, all along); ``"ramp_step"`` (still for the first third, then moving right at
    ``speed`` face sizes per second for the second third, then a jump of ``step`` face sizes
    and still again); ``"sine"`` (side to side, ``amplitude`` face sizes, ``period`` s).
    ``size``: the face's :func:`face_size` in pixels; ``noise``: the std (px) of the
    independent Gaussian noise added to every coordinate of every frame.

    Returns (true, noisy), each a float64 (frames, 68, 2) array.
    """
    c = _TEMPLATE - _TEMPLATE.mean(0)
    base = c * (size / face_size(_TEMPLATE)) + np.asarray(center, dtype=np.float64)
    n = int(frames)
    time = np.arange(n) / fps
    dx = np.zeros(n)
    if motion == "still":
        pass
    elif motion == "drift":
        dx = drift * size * time
    elif motion == "ramp_step":
        a, b = n // 3, 2 * n // 3
        dx[a:b] = speed * size * (time[a:b] - time[a])
        dx[b:] = speed * size * (time[b - 1] - time[a] + 1.0 / fps) + step * size
    elif motion == "sine":
        dx = amplitude * size * np.sin(2 * np.pi * time / period)
    else:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    true = base[None] + np.stack([dx, np.zeros(n)], axis=-1)[:, None, :]
    rng = np.random.default_rng(seed)
    return true, true + rng.normal(0.0, noise, true.shape)


def jitter(frames) -> float:
    """Mean frame-to-frame movement (px) of the points over a (T, ..., 2) sequence: on a still
    face, how much the output shakes. 0 for fewer than two frames."""
    pts = np.asarray(frames, dtype=np.float64)
    if len(pts) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(pts, axis=0), axis=-1).mean())


def lag(path_true, path_filtered) -> float:
    """Mean distance (px) between filtered and true positions over a (T, ..., 2) sequence: on
    a moving face, the error the smoothing's delay (plus what is left of the noise) costs."""
    a = np.asarray(path_true, dtype=np.float64)
    b = np.asarray(path_filtered, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    return float(np.linalg.norm(b - a, axis=-1).mean())


def delay(path_true, path_filtered, max_shift=15) -> float:
    """The delay (frames, fractional) that best aligns the filtered path with the true one:
    the shift d minimising the mean distance between filtered[t] and true[t - d], refined by a
    parabola through the best integer shift and its neighbours."""
    a = np.asarray(path_true, dtype=np.float64)
    b = np.asarray(path_filtered, dtype=np.float64)
    n = len(a)
    max_shift = int(min(max_shift, n - 2))
    errs = np.array([np.linalg.norm(b[d:] - a[:n - d], axis=-1).mean()
                     for d in range(max_shift + 1)])
    d = int(np.argmin(errs))
    if 0 < d < max_shift:
        e0, e1, e2 = errs[d - 1], errs[d], errs[d + 1]
        den = e0 - 2 * e1 + e2
        if den > 0:
            return float(d + 0.5 * (e0 - e2) / den)
    return float(d)


def ema_smooth(frames, alpha=0.4):
    """The old smoother (``detect.KeypointSmoother``): new = alpha * x + (1 - alpha) * prev."""
    x = np.asarray(frames, dtype=np.float64)
    out = np.empty_like(x)
    out[0] = x[0]
    for i in range(1, len(x)):
        out[i] = alpha * x[i] + (1 - alpha) * out[i - 1]
    return out


def one_euro_smooth(frames, fps=30.0, scale=None, **params):
    """Run a fresh :class:`OneEuroFilter` (keypoint settings: one speed per point) over a
    (T, 68, 2) sequence; ``scale`` = the face size (default: :func:`face_size` per frame)."""
    x = np.asarray(frames, dtype=np.float64)
    f = OneEuroFilter(**{"speed_axes": -1, "freq": fps, **params})
    return np.stack([f(xi, scale=face_size(xi) if scale is None else scale) for xi in x])


def _measure(smooth, clips, step_frame, step_px):
    """One smoother's row of measurements on :func:`tune_one_euro`'s clips."""
    row = {"jitter_still": np.mean([jitter(smooth(noisy)) for _, noisy in clips["still"]])}
    row["lag_drift"] = np.mean([lag(tr, smooth(noisy)) for tr, noisy in clips["drift"]])
    outs = [(true, smooth(noisy)) for true, noisy in clips["ramp_step"]]
    row["lag_ramp"] = np.mean([lag(tr, o) for tr, o in outs])
    settle = []
    for tr, o in outs:
        err = np.linalg.norm(o[step_frame:] - tr[step_frame:], axis=-1).mean(-1)
        ok = np.nonzero(err <= 0.1 * step_px)[0]
        settle.append(ok[0] if len(ok) else len(err))
    row["step_frames"] = np.mean(settle)
    outs = [(true, smooth(noisy)) for true, noisy in clips["sine"]]
    row["lag_sine"] = np.mean([lag(tr, o) for tr, o in outs])
    row["delay_sine"] = np.mean([delay(tr, o) for tr, o in outs])
    row["lag_moving"] = row["lag_drift"] + row["lag_ramp"] + row["lag_sine"]
    return row


def tune_one_euro(min_cutoffs=(0.1, 0.3, 0.5, 1.0, 2.0), betas=(0.0, 3.0, 5.0, 10.0, 15.0, 20.0),
                  d_cutoff=1.0, fps=30.0, size=100.0, noise=1.0, noises=(0.25, 1.0, 2.0),
                  frames=150, seeds=(0, 1, 2), ema_alpha=0.4):
    """Measure smoothers on simulated clips: a table (list of dicts), one row per setting.

    Rows: no smoothing, the old EMA (``ema_alpha``), then One Euro (keypoint settings, one
    speed per point) over the grid ``min_cutoffs`` x ``betas``. Clips from
    :func:`simulate_clip` at ``fps``, face size ``size`` px, 68 points. Columns measured with
    noise std ``noise`` px, each averaged over ``seeds``:

    * ``jitter_still``: :func:`jitter` (px per frame) of the output on the still face;
    * ``lag_drift``, ``lag_ramp``, ``lag_sine``: :func:`lag` (mean distance to the true path,
      px) on the ``drift``, ``ramp_step`` and ``sine`` clips; ``lag_moving``: their sum;
    * ``step_frames``: frames after the jump of ``ramp_step`` until the output is within 10 %
      of the jump of the true position (0 = at the jump's own frame);
    * ``delay_sine``: :func:`delay` (frames) on the sine clip;

    and, over every noise std in ``noises``:

    * ``score``: the mean over ``noises`` of ``jitter_still / EMA's`` plus the mean over the
      three moving clips of ``lag_<clip> / EMA's`` (each motion counts alike; 2.0 for the EMA;
      lower is better);
    * ``beats_ema``: at every noise std, ``jitter_still`` no more than the EMA's and
      ``lag_moving`` less than the EMA's.
    """
    noises = tuple(noises)
    if noise not in noises:
        noises += (noise,)
    step_frame, step_px = 2 * frames // 3, 0.3 * size  # simulate_clip's default step
    settings = [("none", None, None, lambda x: x),
                (f"ema {ema_alpha}", None, None, lambda x: ema_smooth(x, ema_alpha))]
    for mc in min_cutoffs:
        for beta in betas:
            settings.append(("one_euro", mc, beta, lambda x, mc=mc, beta=beta: one_euro_smooth(
                x, fps, min_cutoff=mc, beta=beta, d_cutoff=d_cutoff)))
    by_noise = {}
    for sd in noises:
        clips = {m: [simulate_clip(m, frames, fps, size, sd, seed=s) for s in seeds]
                 for m in MOTIONS}
        by_noise[sd] = [_measure(fn, clips, step_frame, step_px) for *_, fn in settings]
    table = []
    for k, (method, mc, beta, _) in enumerate(settings):
        row = {"method": method, "min_cutoff": mc, "beta": beta, **by_noise[noise][k]}
        scores, beats = [], True
        for rows in by_noise.values():
            r, ema = rows[k], rows[1]
            scores.append(r["jitter_still"] / ema["jitter_still"]
                          + np.mean([r[c] / ema[c] for c in ("lag_drift", "lag_ramp", "lag_sine")]))
            beats &= (r["jitter_still"] <= ema["jitter_still"]
                      and r["lag_moving"] < ema["lag_moving"])
        row["score"] = np.mean(scores)
        row["beats_ema"] = bool(beats) if method == "one_euro" else None
        table.append({k2: (round(float(v), 3) if isinstance(v, (float, np.floating)) else v)
                      for k2, v in row.items()})
    return table


def choose_one_euro(table):
    """The One Euro row of :func:`tune_one_euro`'s table that beats the EMA at every noise
    level (``beats_ema``) with the lowest ``score``; None if no row does."""
    ok = [r for r in table if r["method"] == "one_euro" and r["beats_ema"]]
    return min(ok, key=lambda r: r["score"]) if ok else None


def format_table(table) -> str:
    """A Markdown table of :func:`tune_one_euro`'s rows."""
    cols = list(table[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in table:
        lines.append("| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |")
    return "\n".join(lines)
