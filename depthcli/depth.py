"""What a depth value is, in one place.

Conventions used throughout depthcli (and recorded in every ``dataset.json``):

* **z-depth** (``depth_kind = "z"``): the distance along the camera's optical
  axis (camera-space z, OpenCV axes: x right, y down, z forward), *not* the
  length of the ray through the pixel. :func:`ray_length_from_z_depth` converts.
* **invalid marker**: ``0`` (also for disparity). NaN and Inf never appear in
  stored depth; readers turn them into 0.
* **units**: ``"m"`` (metres), ``"sfm"`` (the arbitrary scale of an SfM model),
  or ``"affine"`` (a prediction known only up to scale and shift).
* **disparity** here means *inverse depth* ``k / z`` (``k = 1`` by default;
  some datasets use other constants, e.g. TartanAir's ``80 / depth``). Functions
  that return disparity say so in their names.

All functions take numpy arrays; the ones used in training have torch twins in
:mod:`depthcli.losses`.
"""

from __future__ import annotations

import numpy as np

INVALID = 0.0


def valid_mask(depth: np.ndarray) -> np.ndarray:
    """Pixels holding a usable value: finite and strictly positive."""
    return np.isfinite(depth) & (depth > 0)


def sanitize_depth(depth: np.ndarray) -> np.ndarray:
    """float32 copy with every non-finite or non-positive value set to 0 (invalid)."""
    out = np.asarray(depth, dtype=np.float32).copy()
    out[~valid_mask(out)] = INVALID
    return out


def disparity_from_depth(depth: np.ndarray, k: float = 1.0) -> np.ndarray:
    """Disparity ``k / depth`` on valid pixels, 0 elsewhere (no epsilon)."""
    depth = np.asarray(depth, dtype=np.float64)
    valid = valid_mask(depth)
    out = np.zeros_like(depth)
    out[valid] = k / depth[valid]
    return out


def depth_from_disparity(disparity: np.ndarray, k: float = 1.0) -> np.ndarray:
    """Depth ``k / disparity`` on pixels with positive finite disparity, 0 elsewhere."""
    disparity = np.asarray(disparity, dtype=np.float64)
    valid = valid_mask(disparity)
    out = np.zeros_like(disparity)
    out[valid] = k / disparity[valid]
    return out


def normalize_min_max(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-image min-max normalisation of the valid pixels to [0, 1].

    Invalid pixels become 0. A constant image (max == min) maps to 0 everywhere.
    """
    values = np.asarray(values, dtype=np.float64)
    if valid is None:
        valid = np.isfinite(values)
    out = np.zeros_like(values)
    if not valid.any():
        return out
    lo = values[valid].min()
    hi = values[valid].max()
    if hi > lo:
        out[valid] = (values[valid] - lo) / (hi - lo)
    return out


def apply_far_cutoff(depth: np.ndarray, max_depth: float | None, min_depth: float | None = None) -> np.ndarray:
    """Mark depth beyond ``max_depth`` (and below ``min_depth``) invalid (0)."""
    out = sanitize_depth(depth)
    if max_depth is not None:
        out[out > max_depth] = INVALID
    if min_depth is not None:
        out[(out > 0) & (out < min_depth)] = INVALID
    return out


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (u, v) = (col + 0.5, row + 0.5), as COLMAP (OpenCV uses (col, row))."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return u + 0.5, v + 0.5


def ray_length_from_z_depth(depth_z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Convert z-depth to the Euclidean distance from the camera centre."""
    h, w = depth_z.shape
    u, v = pixel_grid(h, w)
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return depth_z * np.sqrt(x * x + y * y + 1.0)


def backproject_depth(
    depth_z: np.ndarray,
    K: np.ndarray,
    cam_from_world: np.ndarray | None = None,
    stride: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Back-project a z-depth map to 3D points.

    Returns ``(points, pixels)``: ``points`` is ``[N, 3]`` in the world frame when
    ``cam_from_world`` is given (camera frame otherwise); ``pixels`` is ``[N, 2]``
    integer (row, col) of each point. Only valid pixels produce points.
    """
    h, w = depth_z.shape
    rows, cols = np.nonzero(valid_mask(depth_z[::stride, ::stride]))
    rows = rows * stride
    cols = cols * stride
    z = depth_z[rows, cols].astype(np.float64)
    x = (cols + 0.5 - K[0, 2]) / K[0, 0] * z
    y = (rows + 0.5 - K[1, 2]) / K[1, 1] * z
    pts = np.stack([x, y, z], axis=1)
    if cam_from_world is not None:
        world_from_cam = np.linalg.inv(cam_from_world)
        pts = pts @ world_from_cam[:3, :3].T + world_from_cam[:3, 3]
    return pts, np.stack([rows, cols], axis=1)


def downscale_depth_valid(depth: np.ndarray, factor: int) -> np.ndarray:
    """Shrink a depth map by an integer ``factor`` without mixing values.

    Each ``factor x factor`` block (rows/columns beyond a multiple of ``factor``
    are dropped) takes its valid pixel nearest to the block centre (ties:
    row-major order); a block without a valid pixel is invalid (0). Depths are
    never averaged, so no value is invented between a foreground and background.
    """
    f = int(factor)
    depth = np.asarray(depth, dtype=np.float32)
    if f == 1:
        return depth.copy()
    h, w = depth.shape[0] // f, depth.shape[1] // f
    blocks = depth[: h * f, : w * f].reshape(h, f, w, f).transpose(0, 2, 1, 3).reshape(h, w, f * f)
    r, c = np.divmod(np.arange(f * f), f)
    order = np.argsort((r - (f - 1) / 2.0) ** 2 + (c - (f - 1) / 2.0) ** 2, kind="stable")
    blocks = blocks[:, :, order]
    valid = valid_mask(blocks)
    out = np.take_along_axis(blocks, valid.argmax(axis=2)[..., None], axis=2)[..., 0]
    out[~valid.any(axis=2)] = INVALID
    return out
