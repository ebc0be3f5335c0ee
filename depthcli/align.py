"""Per-image alignment of a prediction to ground truth, before scoring.

Methods (``ALIGN_METHODS``), all fitted on valid pixels only:

* ``none``: metric prediction, used as is.
* ``median``: ``depth = s * pred_depth`` with ``s = median(gt) / median(pred_depth)``.
* ``lstsq``: least-squares scale and shift **in depth space** (Marigold):
  ``min_{s,t} sum (s * pred_depth + t - gt)^2``.
* ``lstsq-disparity``: least-squares scale and shift **in disparity space**
  (MiDaS, Depth Anything): ``min_{s,t} sum (s * pred_disp + t - 1/gt)^2``; the
  aligned disparity is clamped to ``>= disparity_floor`` before inverting.

``disparity_floor`` = ``1 / max_depth`` when a depth cap is set, otherwise
``1 / (largest valid GT depth of the image)``. The same floor applies whenever a
disparity prediction is turned into depth. After alignment the depth is clipped
to ``[min_depth, max_depth]`` (the evaluated range).

A depth prediction (``pred_kind="depth"``) is z-depth; a disparity prediction
(``pred_kind="disparity"``) is inverse depth up to an unknown scale (and shift
for affine-invariant models). 0, negative and non-finite values are handled by
the clamps above (the evaluator excludes non-finite predictions and counts them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from typing import Any

import numpy as np

ALIGN_METHODS = ("none", "median", "lstsq", "lstsq-disparity")
PRED_KINDS = ("depth", "disparity")


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product without BLAS (OpenBLAS threads spin badly on a busy machine)."""
    return np.einsum("i,i->", a, b)


def fit_scale_shift(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares ``min_{s,t} sum (s x + t - y)^2`` (closed form, float64 sums).

    A constant ``x`` (no scale information) gives ``s = 0, t = mean(y)``.
    """
    x = np.asarray(x).ravel()
    y = np.asarray(y).ravel()
    n = x.size
    if n == 0:
        return 1.0, 0.0
    # Centred sums in the input precision (pairwise summation / einsum keep float32
    # accurate to ~1e-7 relative); float64 inputs stay float64.
    mx = float(x.sum()) / n
    my = float(y.sum()) / n
    xc = x - x.dtype.type(mx)
    sxx = float(_dot(xc, xc))
    if sxx <= 0 or not math.isfinite(sxx):
        return 0.0, my
    sxy = float(_dot(xc, y - y.dtype.type(my)))
    s = sxy / sxx
    return s, my - s * mx


def fit_median_scale(pred: np.ndarray, gt: np.ndarray) -> float:
    """``median(gt) / median(pred)`` (1.0 when undefined)."""
    if pred.size == 0:
        return 1.0
    mp = float(np.median(pred))
    return float(np.median(gt)) / mp if mp > 0 else 1.0


@dataclass
class Alignment:
    """A fitted per-image alignment; ``apply`` maps a raw prediction to z-depth."""

    method: str  # one of ALIGN_METHODS
    pred_kind: str  # "depth" or "disparity": what the raw prediction holds
    scale: float  # s (depth or disparity space, see method)
    shift: float  # t (same space as the scale)
    min_depth: float  # lower clip of the aligned depth (units of GT)
    max_depth: float  # upper clip of the aligned depth (inf when uncapped)
    disparity_floor: float  # aligned disparity is clamped to >= this before 1/x

    def _pred_depth(self, pred: np.ndarray) -> np.ndarray:
        """Raw prediction as depth (disparity clamped to the floor, then inverted)."""
        if self.pred_kind == "disparity":
            return 1.0 / np.maximum(pred, self.disparity_floor)
        return pred

    def apply(self, pred: np.ndarray) -> np.ndarray:
        """Aligned z-depth, clipped to ``[min_depth, max_depth]`` (any array shape)."""
        pred = np.asarray(pred)
        if self.method == "lstsq-disparity":
            disp = pred if self.pred_kind == "disparity" else 1.0 / np.maximum(pred, self.min_depth)
            depth = 1.0 / np.maximum(self.scale * disp + self.shift, self.disparity_floor)
        else:
            depth = self._pred_depth(pred)
            if self.method != "none":
                depth = self.scale * depth + self.shift
        return np.clip(depth, self.min_depth, self.max_depth)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_alignment(
    pred: np.ndarray,
    gt: np.ndarray,
    method: str = "lstsq",
    pred_kind: str = "depth",
    min_depth: float = 1e-3,
    max_depth: float | None = None,
) -> Alignment:
    """Fit ``method`` on 1-D arrays of valid pixels (raw prediction, GT z-depth > 0)."""
    if method not in ALIGN_METHODS:
        raise ValueError(f"align must be one of {ALIGN_METHODS}, got {method!r}")
    if pred_kind not in PRED_KINDS:
        raise ValueError(f"pred_kind must be one of {PRED_KINDS}, got {pred_kind!r}")
    cap = math.inf if max_depth is None else float(max_depth)
    if math.isfinite(cap):
        floor = 1.0 / cap
    else:
        floor = 1.0 / float(gt.max()) if gt.size else 1e-6
    al = Alignment(method, pred_kind, 1.0, 0.0, float(min_depth), cap, floor)
    if method == "none":
        return al
    if method == "lstsq-disparity":
        disp = pred if pred_kind == "disparity" else 1.0 / np.maximum(pred, min_depth)
        al.scale, al.shift = fit_scale_shift(disp, 1.0 / gt)
        return al
    depth = al._pred_depth(pred)
    if method == "median":
        al.scale = fit_median_scale(depth, gt)
    else:
        al.scale, al.shift = fit_scale_shift(depth, gt)
    return al


def align_depth(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray,
    method: str = "lstsq",
    pred_kind: str = "depth",
    min_depth: float = 1e-3,
    max_depth: float | None = None,
) -> tuple[np.ndarray, Alignment]:
    """Fit on ``valid`` pixels of full maps and return the aligned z-depth map (all pixels)."""
    al = fit_alignment(pred[valid], gt[valid], method, pred_kind, min_depth, max_depth)
    return al.apply(pred), al
