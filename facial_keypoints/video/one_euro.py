"""The 1-euro filter of Casiez, Roussel and Vogel (CHI 2012), vectorised over an array (e.g.
(68, 2) keypoints) and normalised by the face's size, so that the same parameters suit a 40-px
face and a 400-px one.
"""
from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np

#: Default One Euro parameters: cutoffs in Hz, ``beta`` in Hz per (face size per second); the
#: speed of a keypoint is the norm of its (x, y) velocity. Chosen by measurement:
#: ``choose_one_euro(tune_one_euro())`` — simulated 30-fps clips of a 100-px face with
#: Gaussian noise of 0.25, 1 and 2 px, three seeds — the setting that beats the old
#: exponential smoother (alpha 0.4) on still-face jitter and on moving-face lag at every
#: noise level with the best relative score. At 1 px noise: jitter 0.33 px/frame (EMA 0.56,
#: none 1.76), summed lag on the three moving clips 3.00 px (EMA 4.77), 0.66 frames of delay
#: on the sine (EMA 1.44). The optimum is flat: (0.5, 10) and (0.1, 15) score the same.
#: Read-only; pass ``{**DEFAULT_ONE_EURO, "beta": ...}`` to change a value.
DEFAULT_ONE_EURO = MappingProxyType({"min_cutoff": 0.3, "beta": 15.0, "d_cutoff": 1.0})


# ------------------------------------------------------------------------------------------
# One Euro filter
# ------------------------------------------------------------------------------------------
def _smoothing_factor(cutoff, dt):
    """Weight of the new sample in a first-order low-pass at ``cutoff`` Hz, step ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The 1€ filter (Casiez, Roussel and Vogel, CHI 2012), vectorised and size-normalised.

    A first-order low-pass filter whose cutoff rises with the speed of the signal:
    ``cutoff = min_cutoff + beta * speed``. At rest the cutoff is ``min_cutoff`` (strong
    smoothing: little jitter); when the signal moves the cutoff rises (little lag). The speed
    is the derivative of the input (from the previous *raw* value, as in the authors'
    reference code and MediaPipe), itself low-passed at ``d_cutoff`` Hz, and divided by
    ``scale`` — so it is measured in face sizes per second when ``scale`` is the face's size
    in pixels, and the same parameters work for a small and a large face.

    Every value of the array gets its own low-pass filter. ``speed_axes`` says which values
    share one speed (hence one cutoff): None = each value its own (the paper's per-dimension
    form); ``-1`` on (68, 2) keypoints = one speed per point, the norm of its (x, y) velocity
    (rotation-invariant). The output is always between the previous output and the new input
    (the weight is in (0, 1]), so the filter never overshoots and a constant input stays
    exactly constant.

    Args:
        min_cutoff: cutoff (Hz) at rest; lower = smoother, more lag at low speed.
        beta: how fast the cutoff rises with speed (Hz per face size per second when
            ``scale`` is the face size); higher = less lag when moving.
        d_cutoff: cutoff (Hz) of the low-pass on the derivative.
        freq: sampling rate (Hz) used when no timestamp is given (and when timestamps do not
            increase: some videos repeat a frame time).
        speed_axes: None, an int or a tuple of ints (see above).
    """

    def __init__(self, min_cutoff=DEFAULT_ONE_EURO["min_cutoff"],
                 beta=DEFAULT_ONE_EURO["beta"], d_cutoff=DEFAULT_ONE_EURO["d_cutoff"],
                 freq=30.0, speed_axes=None):
        for name, v in (("min_cutoff", min_cutoff), ("d_cutoff", d_cutoff), ("freq", freq)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a non-negative number, got {beta!r}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.freq = float(freq)
        self.speed_axes = speed_axes
        self.reset()

    def reset(self):
        """Forget the past: the next call returns its input unchanged."""
        self._raw = None   # previous raw input
        self._out = None   # previous output
        self._dx = None    # previous low-passed derivative
        self._t = None     # previous timestamp (s), or None

    def __call__(self, x, t=None, scale=1.0):
        """Filter one sample ``x`` taken at time ``t`` (s; None = ``1 / freq`` after the last).

        ``scale``: the face's size in pixels (a positive number, or an array broadcastable
        to the speed's shape). Returns a new float64 array shaped like ``x``.
        """
        x = np.array(x, dtype=np.float64)  # a copy: the caller may reuse its array
        if self._out is None:
            self._raw, self._out, self._dx = x, x.copy(), np.zeros_like(x)
            self._t = None if t is None else float(t)
            return x.copy()
        if x.shape != self._out.shape:
            raise ValueError(f"expected an array of shape {self._out.shape}, got {x.shape}")
        scale = np.asarray(scale, dtype=np.float64)
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError(f"scale must be positive, got {scale!r}")
        dt = 1.0 / self.freq
        if t is not None:
            if self._t is not None and float(t) > self._t:
                dt = float(t) - self._t
            self._t = float(t)
        elif self._t is not None:
            self._t += dt
        dx = (x - self._raw) / dt
        self._dx = self._dx + _smoothing_factor(self.d_cutoff, dt) * (dx - self._dx)
        if self.speed_axes is None:
            speed = np.abs(self._dx)
        else:
            speed = np.sqrt(np.sum(self._dx ** 2, axis=self.speed_axes, keepdims=True))
        cutoff = self.min_cutoff + self.beta * speed / scale
        a = _smoothing_factor(cutoff, dt)
        self._out = self._out + a * (x - self._out)
        self._raw = x
        return self._out.copy()
