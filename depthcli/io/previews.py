"""Colourised depth previews: a perceptual colormap, invalid pixels black.

Depth is shown through its inverse (near = bright), the usual way depth maps
are looked at; the range ``[lo, hi]`` in depth units is given by the caller so
all frames of a dataset share one colour scale.
"""

from __future__ import annotations

import numpy as np

from depthcli.depth import valid_mask


def depth_range(depth: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.0) -> tuple[float, float] | None:
    v = depth[valid_mask(depth)]
    if v.size == 0:
        return None
    return float(np.percentile(v, lo_pct)), float(np.percentile(v, hi_pct))


def colorize_depth(depth: np.ndarray, lo: float, hi: float, cmap: str = "magma") -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB; near is bright, invalid is black."""
    import cv2

    maps = {"magma": cv2.COLORMAP_MAGMA, "viridis": cv2.COLORMAP_VIRIDIS, "inferno": cv2.COLORMAP_INFERNO, "turbo": cv2.COLORMAP_TURBO}
    valid = valid_mask(depth)
    lo = max(lo, 1e-12)
    hi = max(hi, lo * (1 + 1e-6))
    inv = np.zeros(depth.shape, dtype=np.float64)
    inv[valid] = 1.0 / np.clip(depth[valid], lo, hi)
    t = np.zeros_like(inv)
    t[valid] = (inv[valid] - 1.0 / hi) / (1.0 / lo - 1.0 / hi)
    gray = np.clip(np.round(t * 255), 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(gray, maps[cmap])
    bgr[~valid] = 0
    return bgr[..., ::-1].copy()


def colorize_values(values: np.ndarray, valid: np.ndarray, lo: float, hi: float, cmap: str = "magma") -> np.ndarray:
    """Colourise any scalar map linearly (e.g. disparity or an error map)."""
    import cv2

    maps = {"magma": cv2.COLORMAP_MAGMA, "viridis": cv2.COLORMAP_VIRIDIS, "inferno": cv2.COLORMAP_INFERNO, "turbo": cv2.COLORMAP_TURBO}
    t = np.zeros(values.shape, dtype=np.float64)
    span = hi - lo if hi > lo else 1.0
    t[valid] = (values[valid] - lo) / span
    gray = np.clip(np.round(t * 255), 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(gray, maps[cmap])
    bgr[~valid] = 0
    return bgr[..., ::-1].copy()
