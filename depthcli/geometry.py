"""Cameras and projection (pinhole, OpenCV axes, pixel centres at +0.5).

A point ``X_world`` maps to camera space as ``X_cam = R @ X_world + t`` with
``cam_from_world = [[R, t], [0, 1]]``; its z-depth is ``X_cam.z``; its image
position is ``u = fx * x / z + cx``, ``v = fy * y / z + cy``, where the top-left
corner of the image is (0, 0), so pixel (row, col) covers ``[col, col + 1) x
[row, row + 1)`` and its centre is ``(col + 0.5, row + 0.5)``.
"""

from __future__ import annotations

import numpy as np


def make_K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform (exact for rotation + translation)."""
    R = T[:3, :3]
    t = T[:3, 3]
    out = np.eye(4, dtype=np.float64)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to ``[N, 3]`` points."""
    return points @ T[:3, :3].T + T[:3, 3]


def project_points(
    points_world: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Project ``[N, 3]`` world points; returns ``(uv [N, 2], z [N])``.

    ``uv`` uses the continuous convention above (pixel index = floor(uv)). Points
    with ``z <= 0`` get NaN ``uv``.
    """
    pc = transform_points(cam_from_world, np.asarray(points_world, dtype=np.float64))
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * pc[:, 0] / z + K[0, 2]
        v = K[1, 1] * pc[:, 1] / z + K[1, 2]
    uv = np.stack([u, v], axis=1)
    uv[z <= 0] = np.nan
    return uv, z


def scale_K(K: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """Intrinsics of an image resized by (sx, sy) (corner-aligned, pixel-centre convention)."""
    sy = sx if sy is None else sy
    out = np.array(K, dtype=np.float64).copy()
    out[0, 0] *= sx
    out[0, 2] *= sx
    out[1, 1] *= sy
    out[1, 2] *= sy
    return out


def splat_sparse_depth(
    uv: np.ndarray, z: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise projected points into a z-depth map; the nearest point wins a pixel.

    Returns ``(depth [H, W] float32 with 0 = empty, index [H, W] int64 with -1 = empty)``
    where ``index`` is the winning point's position in the inputs.
    """
    depth = np.zeros((height, width), dtype=np.float32)
    index = np.full((height, width), -1, dtype=np.int64)
    ok = np.isfinite(uv).all(axis=1) & (z > 0)
    cols = np.floor(uv[:, 0]).astype(np.int64, copy=False) if len(uv) else np.zeros(0, np.int64)
    rows = np.floor(uv[:, 1]).astype(np.int64, copy=False) if len(uv) else np.zeros(0, np.int64)
    ok &= (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    ids = np.nonzero(ok)[0]
    if len(ids) == 0:
        return depth, index
    # For each pixel keep the nearest point: sort by (pixel, z) and take the
    # first entry of every pixel run (explicit, not relying on write order).
    pix = rows[ids] * width + cols[ids]
    order = np.lexsort((z[ids], pix))
    pix_sorted = pix[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = pix_sorted[1:] != pix_sorted[:-1]
    winners = ids[order[first]]
    depth[rows[winners], cols[winners]] = z[winners]
    index[rows[winners], cols[winners]] = winners
    return depth, index


def rotation_from_quaternion(q_wxyz: np.ndarray) -> np.ndarray:
    """3x3 rotation of a quaternion given as (w, x, y, z); normalised first."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def quaternion_from_rotation(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with w >= 0 of a 3x3 rotation matrix."""
    tr = np.trace(R)
    if tr > 0:
        s = 2 * np.sqrt(tr + 1)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2 * np.sqrt(1 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2 * np.sqrt(1 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2 * np.sqrt(1 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.asarray(q) / np.linalg.norm(q)
    return q if q[0] >= 0 else -q
