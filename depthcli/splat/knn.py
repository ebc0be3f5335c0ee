"""Exact k-nearest-neighbour distances of a 3D point cloud (numba, uniform grid).

Used to size the initial Gaussians (RMS distance to the 3 nearest neighbours). A
uniform grid with rings searched outwards is exact: after the rings of Chebyshev
radius 0..r around a point's cell are visited, every point not yet seen is at least
``r * h`` away, so the search stops once the k-th best distance is below that.

numba is imported when this module is (import it lazily); the kernel is compiled
once and cached on disk, like the CPU rasteriser's.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

#: cells per axis at most (keeps the int64 cell keys far from overflow)
_MAX_CELLS_PER_AXIS = 1 << 20


def knn_sq_distances(points: np.ndarray, k: int) -> np.ndarray:
    """Squared distances ``[n, k]`` (ascending) from each point to its ``k`` nearest
    *other* points (a duplicate of a point counts, at distance 0). Rows of a cloud
    with fewer than ``k + 1`` points are padded with ``inf``."""
    pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    n = len(pts)
    if n == 0:
        return np.zeros((0, k))
    if not np.isfinite(pts).all():
        raise ValueError("points must be finite")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = float((hi - lo).max())
    # ~ one point per cell for a volume-filling cloud, a few for points on surfaces
    h = extent / max(n ** (1.0 / 3.0), 1.0) if extent > 0 else 1.0
    h = max(h, extent / (_MAX_CELLS_PER_AXIS - 2), 1e-300)
    cells = np.floor((pts - lo) / h).astype(np.int64)
    dims = cells.max(axis=0) + 1
    keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    order = np.argsort(keys, kind="stable")
    return _knn(pts, cells, keys[order], order, dims, float(h), int(k))


@njit(cache=True, inline="always")
def _cell_range(sorted_keys, key):
    lo = np.searchsorted(sorted_keys, key, side="left")
    hi = np.searchsorted(sorted_keys, key, side="right")
    return lo, hi


@njit(parallel=True, cache=True)
def _knn(pts, cells, sorted_keys, order, dims, h, k):
    n = pts.shape[0]
    out = np.full((n, k), np.inf)
    max_r = max(dims[0], max(dims[1], dims[2]))
    for i in prange(n):
        best = np.full(k, np.inf)
        px, py, pz = pts[i, 0], pts[i, 1], pts[i, 2]
        cx, cy, cz = cells[i, 0], cells[i, 1], cells[i, 2]
        found = 0
        r = 0
        while True:
            for dx in range(-r, r + 1):
                x = cx + dx
                if x < 0 or x >= dims[0]:
                    continue
                for dy in range(-r, r + 1):
                    y = cy + dy
                    if y < 0 or y >= dims[1]:
                        continue
                    edge_xy = abs(dx) == r or abs(dy) == r
                    step = 1 if edge_xy else 2 * r  # interior (x, y): only the two z faces of the ring
                    dz = -r
                    while dz <= r:
                        z = cz + dz
                        if 0 <= z < dims[2]:
                            lo, hi = _cell_range(sorted_keys, (x * dims[1] + y) * dims[2] + z)
                            for s in range(lo, hi):
                                j = order[s]
                                if j == i:
                                    continue
                                ddx, ddy, ddz = pts[j, 0] - px, pts[j, 1] - py, pts[j, 2] - pz
                                d2 = ddx * ddx + ddy * ddy + ddz * ddz
                                if d2 < best[k - 1]:
                                    m = k - 1
                                    while m > 0 and best[m - 1] > d2:
                                        best[m] = best[m - 1]
                                        m -= 1
                                    best[m] = d2
                                found += 1
                        dz += step if r > 0 else 1
            reach = r * h
            if (found >= k and best[k - 1] <= reach * reach) or r >= max_r:
                break
            r += 1
        for m in range(k):
            out[i, m] = best[m]
    return out


def rms_knn_distance(points: np.ndarray, k: int = 3) -> np.ndarray:
    """RMS distance from each point to its ``k`` nearest other points ``[n]`` (``k`` capped at n - 1)."""
    n = len(points)
    k = min(k, n - 1)
    if k < 1:
        return np.full(n, math.nan)
    return np.sqrt(knn_sq_distances(points, k).mean(axis=1))
