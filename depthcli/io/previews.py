"""Colourised depth previews: a perceptual colormap, invalid pixels black.

Depth is shown through its inverse (near = bright), the usual way depth maps
are looked at; the range ``[lo, hi]`` in depth units is given by the caller so
all frames of a dataset share one colour scale.
"""

from __future__ import annotations

import numpy as np

from depthcli.depth import valid_mask


def _apply_colormap(t: np.ndarray, valid: np.ndarray, cmap: str) -> np.ndarray:
    """RGB uint8 of values ``t`` in [0, 1] through an OpenCV colormap; invalid pixels black."""
    import cv2

    gray = np.clip(np.round(t * 255), 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(gray, getattr(cv2, f"COLORMAP_{cmap.upper()}"))
    bgr[~valid] = 0
    return bgr[..., ::-1].copy()


def colorize_depth(depth: np.ndarray, lo: float, hi: float, cmap: str = "magma") -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB; near is bright, invalid is black."""
    valid = valid_mask(depth)
    lo = max(lo, 1e-12)
    hi = max(hi, lo * (1 + 1e-6))
    inv = np.zeros(depth.shape, dtype=np.float64)
    inv[valid] = 1.0 / np.clip(depth[valid], lo, hi)
    t = np.zeros_like(inv)
    t[valid] = (inv[valid] - 1.0 / hi) / (1.0 / lo - 1.0 / hi)
    return _apply_colormap(t, valid, cmap)


def colorize_values(values: np.ndarray, valid: np.ndarray, lo: float, hi: float, cmap: str = "magma") -> np.ndarray:
    """Colourise any scalar map linearly (e.g. disparity or an error map)."""
    t = np.zeros(values.shape, dtype=np.float64)
    span = hi - lo if hi > lo else 1.0
    t[valid] = (values[valid] - lo) / span
    return _apply_colormap(t, valid, cmap)
