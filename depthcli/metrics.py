"""Depth metrics: functions of ``(pred, gt, valid)`` returning dicts of named floats.

Conventions (see ``docs/eval.md`` for the full protocol):

* ``pred`` and ``gt`` are **z-depth** in the same units (after alignment for
  affine-invariant predictions); ``valid`` is a boolean mask of the pixels to
  score. Every valid pixel must have ``pred > 0`` and ``gt > 0`` (the evaluator
  clips aligned predictions to ``[min_depth, max_depth]`` first).
* ``e = ln(pred) - ln(gt)`` is the log error used by RMSE-log, SILog and the
  delta thresholds (``max(pred/gt, gt/pred) < 1.25**k``  <=>  ``|e| < k ln 1.25``).
* Two SILog formulas are in use, both are reported under distinct names:

  - ``silog``      = ``100 * sqrt(mean(e^2) - mean(e)^2)``  (KITTI benchmark, BTS, Marigold)
  - ``silog_dav2`` = ``sqrt(mean(e^2) - 0.5 * mean(e)^2)``   (Depth-Anything-V2 metric_depth, no x100)

* ``irmse`` is ``sqrt(mean((1/pred - 1/gt)^2))`` in 1/units (KITTI reports
  1/km: multiply metres' value by 1000).

Every per-pixel metric is a ratio of additive sums, so the same
:class:`MetricSums` gives a per-image value and, pooled over images, the
all-pixels value without holding any image in memory. The one exception is the
variance of ``e`` behind SILog: ``mean(e^2) - mean(e)^2`` cancels
catastrophically (a prediction exactly 1.1 x GT scored 0.008 instead of 0), so
``e`` is taken in float64 and its sum of squared deviations about its own mean
is kept and pooled with the exact two-group formula (Chan et al.).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

#: Metric names, in the order tables list them. ``lower`` = lower is better.
METRIC_NAMES = (
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "delta1",
    "delta2",
    "delta3",
    "silog",
    "silog_dav2",
    "irmse",
)
HIGHER_IS_BETTER = {"delta1", "delta2", "delta3", "boundary_f1", "pairs_accuracy"}

_LN_125 = math.log(1.25)


def _dot(a, b) -> float:
    """Inner product without BLAS (OpenBLAS threads spin badly on a busy machine)."""
    return np.einsum("i,i->", np.asarray(a), np.asarray(b))

_LN_10 = math.log(10.0)

# Index of each sum in a MetricSums vector (_M2: sum of (e - mean e)^2, pooled by _merge).
_N, _ABS_REL, _SQ_REL, _SE, _M2, _ABS_E, _D1, _D2, _D3, _E, _IE2 = range(11)
N_SUMS = 11


class MetricSums:
    """Sums over valid pixels from which every depth metric follows.

    ``MetricSums.of(pred, gt)`` for one set of pixels, ``a + b`` (or ``a.add(b)``)
    to pool, ``.metrics()`` for the named values. A float64 vector of 11 numbers:
    additive sums, except the centred second moment of ``e`` (see :func:`_merge`).
    """

    __slots__ = ("v",)

    def __init__(self, v: np.ndarray | None = None):
        self.v = np.zeros(N_SUMS, dtype=np.float64) if v is None else np.asarray(v, dtype=np.float64)

    @classmethod
    def of(cls, pred: np.ndarray, gt: np.ndarray) -> "MetricSums":
        """Sums for 1-D arrays of valid pixels (``pred > 0``, ``gt > 0``, same units)."""
        dtype = np.result_type(pred.dtype, gt.dtype, np.float32)
        p = np.asarray(pred, dtype=dtype).ravel()
        g = np.asarray(gt, dtype=dtype).ravel()
        v = np.zeros(N_SUMS, dtype=np.float64)
        n = p.size
        v[_N] = n
        if n == 0:
            return cls(v)
        inv_g = 1.0 / g
        diff = p - g
        adiff = np.abs(diff)
        v[_ABS_REL] = float(_dot(adiff, inv_g))
        d2 = diff * diff
        v[_SQ_REL] = float(_dot(d2, inv_g))
        v[_SE] = float(d2.sum())  # numpy's pairwise summation: float32 is accurate here
        # e = ln(pred / gt) in float64: the spread of e behind SILog can be ~1e-8 of
        # its mean, below what float32 (or mean(e^2) - mean(e)^2) resolves.
        e = np.divide(p, g, dtype=np.float64)
        np.log(e, out=e)
        v[_E] = float(e.sum())
        dev = e - v[_E] / n  # second pass about the mean: no cancellation
        v[_M2] = float(_dot(dev, dev))
        ae = np.abs(e, out=e)
        v[_ABS_E] = float(ae.sum())
        v[_D1] = np.count_nonzero(ae < _LN_125)
        v[_D2] = np.count_nonzero(ae < 2 * _LN_125)
        v[_D3] = np.count_nonzero(ae < 3 * _LN_125)
        ie = 1.0 / p
        ie -= inv_g
        v[_IE2] = float(_dot(ie, ie))
        return cls(v)

    def __add__(self, other: "MetricSums") -> "MetricSums":
        return MetricSums(_merge(self.v, other.v))

    def add(self, other: "MetricSums") -> None:
        """In-place pooling."""
        self.v = _merge(self.v, other.v)

    @property
    def count(self) -> int:
        return int(self.v[_N])

    def metrics(self) -> dict[str, float]:
        """Named metrics (NaN for every metric when there are no pixels)."""
        v = self.v
        n = v[_N]
        if n == 0:
            return {k: float("nan") for k in METRIC_NAMES}
        mean_e = v[_E] / n
        var = max(v[_M2] / n, 0.0)  # mean(e^2) - mean(e)^2, computed without cancellation
        mean_e2 = var + mean_e * mean_e
        return {
            "abs_rel": v[_ABS_REL] / n,
            "sq_rel": v[_SQ_REL] / n,
            "rmse": math.sqrt(v[_SE] / n),
            "rmse_log": math.sqrt(mean_e2),
            "log10": v[_ABS_E] / n / _LN_10,
            "delta1": v[_D1] / n,
            "delta2": v[_D2] / n,
            "delta3": v[_D3] / n,
            "silog": 100.0 * math.sqrt(var),
            "silog_dav2": math.sqrt(var + 0.5 * mean_e * mean_e),  # = sqrt(mean(e^2) - 0.5 mean(e)^2)
            "irmse": math.sqrt(v[_IE2] / n),
        }


def _merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pool two sum vectors: every slot adds, except ``_M2`` (sum of squared deviations
    of e about its group mean), which gains ``d^2 na nb / (na + nb)`` with ``d`` the
    difference of the group means (exact, and stable unlike pooling sums of e^2)."""
    out = a + b
    na, nb = a[_N], b[_N]
    if na > 0 and nb > 0:
        d = b[_E] / nb - a[_E] / na
        out[_M2] = a[_M2] + b[_M2] + d * d * (na * nb / (na + nb))
    return out


def _gather(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
    if valid is None:
        valid = np.isfinite(gt) & (gt > 0)
    elif valid.shape != gt.shape:
        raise ValueError(f"valid mask shape {valid.shape} != gt shape {gt.shape}")
    p = pred[valid]
    g = gt[valid]
    if p.size and not (np.all(p > 0) and np.all(np.isfinite(p))):
        raise ValueError("pred must be finite and > 0 on valid pixels (clip aligned depth to [min_depth, max_depth])")
    if g.size and not (np.all(g > 0) and np.all(np.isfinite(g))):
        raise ValueError("gt must be finite and > 0 on valid pixels")
    return p, g


def depth_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """All standard metrics of one image (z-depth ``pred`` vs ``gt``, same units).

    ``valid``: boolean mask of scored pixels (default: ``gt`` finite and > 0).
    Returns ``METRIC_NAMES`` -> float, plus ``valid_pixels``.
    """
    p, g = _gather(pred, gt, valid)
    out = MetricSums.of(p, g).metrics()
    out["valid_pixels"] = int(p.size)
    return out


def abs_rel(pred, gt, valid=None) -> float:
    """mean(|pred - gt| / gt) over valid pixels."""
    return depth_metrics(pred, gt, valid)["abs_rel"]


def sq_rel(pred, gt, valid=None) -> float:
    """mean((pred - gt)^2 / gt) over valid pixels."""
    return depth_metrics(pred, gt, valid)["sq_rel"]


def rmse(pred, gt, valid=None) -> float:
    """sqrt(mean((pred - gt)^2)), in depth units."""
    return depth_metrics(pred, gt, valid)["rmse"]


def rmse_log(pred, gt, valid=None) -> float:
    """sqrt(mean((ln pred - ln gt)^2))."""
    return depth_metrics(pred, gt, valid)["rmse_log"]


def log10_error(pred, gt, valid=None) -> float:
    """mean(|log10 pred - log10 gt|)."""
    return depth_metrics(pred, gt, valid)["log10"]


def delta(pred, gt, valid=None, k: int = 1) -> float:
    """Fraction of valid pixels with max(pred/gt, gt/pred) < 1.25**k."""
    return depth_metrics(pred, gt, valid)[f"delta{k}"]


def silog(pred, gt, valid=None) -> float:
    """100 * sqrt(mean(e^2) - mean(e)^2), e = ln pred - ln gt (KITTI / BTS / Marigold)."""
    return depth_metrics(pred, gt, valid)["silog"]


def silog_dav2(pred, gt, valid=None) -> float:
    """sqrt(mean(e^2) - 0.5 mean(e)^2), e = ln pred - ln gt (Depth-Anything-V2 metric_depth)."""
    return depth_metrics(pred, gt, valid)["silog_dav2"]


def irmse(pred, gt, valid=None) -> float:
    """sqrt(mean((1/pred - 1/gt)^2)), in 1/units."""
    return depth_metrics(pred, gt, valid)["irmse"]


# --------------------------------------------------------------------------- edges


def _edges(inv: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Foreground/background relations of 4-neighbours in an inverse-depth map.

    Returns (left, top, right, bottom): ``right[i, j]`` is True when the pixel to
    the right is more than ``t`` times nearer (larger inverse depth).
    """
    right = inv[:, 1:] > t * inv[:, :-1]
    left = inv[:, :-1] > t * inv[:, 1:]
    bottom = inv[1:, :] > t * inv[:-1, :]
    top = inv[:-1, :] > t * inv[1:, :]
    return left, top, right, bottom


def boundary_f1(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    t_min: float = 1.05,
    t_max: float = 1.25,
    n: int = 10,
) -> dict[str, float]:
    """Scale-invariant boundary F1 (Depth Pro, Bochkovskii et al. 2024, Sec. 3.2).

    Both z-depth maps are inverted (``1 / max(d, 1e-6)``); for each threshold
    ``t`` in ``linspace(t_min, t_max, n)`` a neighbour pair is an occluding
    contour when the inverse-depth ratio exceeds ``t`` (4 directions). Recall and
    precision are averaged over the 4 directions, F1 = 2PR/(P+R) (0 when P+R=0),
    and the F1 values are averaged with weights ``t / sum(t)``. Ratios are
    invariant to the scale of ``pred``. Extension to sparse GT: with ``valid``
    only pairs whose two pixels are valid count (Depth Pro uses dense GT).
    Returns ``boundary_f1``, ``boundary_precision``, ``boundary_recall``.
    """
    pred = np.asarray(pred, dtype=np.float32)
    gt = np.asarray(gt, dtype=np.float32)
    if valid is None:
        valid = np.isfinite(gt) & (gt > 0)
    ip = 1.0 / np.clip(np.nan_to_num(pred, nan=1e-6), 1e-6, None)
    ig = 1.0 / np.clip(np.nan_to_num(gt, nan=1e-6), 1e-6, None)
    pair_h = valid[:, 1:] & valid[:, :-1]
    pair_v = valid[1:, :] & valid[:-1, :]
    pair_masks = (pair_h, pair_v, pair_h, pair_v)
    thresholds = np.linspace(t_min, t_max, n)
    weights = thresholds / thresholds.sum()
    f1s, ps, rs = [], [], []
    for t in thresholds:
        pe = _edges(ip, float(t))
        ge = _edges(ig, float(t))
        r = p = 0.0
        for a, b, m in zip(pe, ge, pair_masks):
            a = a & m
            b = b & m
            hit = np.count_nonzero(a & b)
            r += hit / max(np.count_nonzero(b), 1)
            p += hit / max(np.count_nonzero(a), 1)
        r /= 4
        p /= 4
        f1s.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
        ps.append(p)
        rs.append(r)
    return {
        "boundary_f1": float(_dot(weights, f1s)),
        "boundary_precision": float(_dot(weights, ps)),
        "boundary_recall": float(_dot(weights, rs)),
    }


# --------------------------------------------------------------------------- ordinal


def ordinal_pair_correct(depth: np.ndarray, pairs: Iterable[tuple[tuple[int, int], tuple[int, int]]]) -> tuple[int, int]:
    """Count pairs ordered correctly by a **z-depth** (or any depth-ordered) map.

    ``pairs``: ``((row_a, col_a), (row_b, col_b))`` where point ``a`` is the
    closer one (DA-2K: ``point1`` after swapping so that it is the closer).
    Correct when ``depth[a] < depth[b]`` (a tie or a non-finite value is wrong).
    Returns ``(correct, total)``.
    """
    correct = total = 0
    h, w = depth.shape
    for (ra, ca), (rb, cb) in pairs:
        total += 1
        if not (0 <= ra < h and 0 <= ca < w and 0 <= rb < h and 0 <= cb < w):
            continue
        da, db = depth[ra, ca], depth[rb, cb]
        if np.isfinite(da) and np.isfinite(db) and da < db:
            correct += 1
    return correct, total


def sample_pairs(valid: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random point pairs among valid pixels: two flat-index arrays (may repeat)."""
    idx = np.flatnonzero(valid)
    if idx.size < 2 or n <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a = idx[rng.integers(0, idx.size, n)]
    b = idx[rng.integers(0, idx.size, n)]
    keep = a != b
    return a[keep], b[keep]


def disputed_pairs(depths: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean per pair: True when the models do not all order points a, b the same way.

    ``depths``: flat z-depth maps (one per model); the order is ``sign(d[a] - d[b])``
    (-1 nearer, 0 tie, +1 farther); a pair is consistent when every model gives
    the same sign.
    """
    signs = [np.sign(d[a] - d[b]) for d in depths]
    disputed = np.zeros(a.shape, dtype=bool)
    for s in signs[1:]:
        disputed |= s != signs[0]
    return disputed
