"""Exports of a synthetic scene in other tools' layouts, for testing ``convert``
against exact truth.

* COLMAP text model (``cameras.txt``, ``images.txt``, ``points3D.txt``): one
  camera, every view registered with its exact pose, 3D points sampled on
  visible surfaces with full tracks, observations at their exact (distorted)
  projections, reprojection error 0. With a distorted camera model the images
  are rendered through that distortion.
* 7-Scenes RGB-D folder: ``frame-NNNNNN.color.png``, ``.depth.png`` (uint16 mm,
  0 = invalid), ``.pose.txt`` (camera-to-world), ``camera-intrinsics.txt``.

COLMAP's image convention matches depthcli's: the top-left pixel's centre is
(0.5, 0.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from depthcli.geometry import quaternion_from_rotation

#: Camera models we render, with their distortion parameters.
COLMAP_CAMERAS = ("PINHOLE", "SIMPLE_RADIAL", "OPENCV")
_OPENCV_DIST = (-0.12, 0.04, 0.0015, -0.001)  # k1, k2, p1, p2: mild barrel distortion, as a real lens
_SIMPLE_RADIAL_K = -0.08


def distort(xy: np.ndarray, model: str) -> np.ndarray:
    """Normalised undistorted -> distorted image coordinates (COLMAP/OpenCV formulas)."""
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    if model == "PINHOLE":
        return xy.copy()
    if model == "SIMPLE_RADIAL":
        f = 1 + _SIMPLE_RADIAL_K * r2
        return np.stack([x * f, y * f], axis=1)
    k1, k2, p1, p2 = _OPENCV_DIST
    rad = 1 + k1 * r2 + k2 * r2 * r2
    xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=1)


def undistort(xy_d: np.ndarray, model: str, iterations: int = 30) -> np.ndarray:
    """Invert :func:`distort` by Newton's method (converges to ~1e-15 for these models)."""
    if model == "PINHOLE":
        return xy_d.copy()
    xy = xy_d.copy()
    h = 1e-7
    for _ in range(iterations):
        f = distort(xy, model) - xy_d
        # Jacobian by central differences is accurate to ~1e-9; Newton then
        # converges quadratically to the exact root of f (the residual, not J, sets accuracy).
        jx = (distort(xy + [h, 0], model) - distort(xy - [h, 0], model)) / (2 * h)
        jy = (distort(xy + [0, h], model) - distort(xy - [0, h], model)) / (2 * h)
        det = jx[:, 0] * jy[:, 1] - jy[:, 0] * jx[:, 1]
        dx = (jy[:, 1] * f[:, 0] - jy[:, 0] * f[:, 1]) / det
        dy = (-jx[:, 1] * f[:, 0] + jx[:, 0] * f[:, 1]) / det
        xy = xy - np.stack([dx, dy], axis=1)
        if np.abs(f).max() < 1e-15:
            break
    return xy


def camera_params(model: str, K: np.ndarray) -> list[float]:
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if model == "PINHOLE":
        return [fx, fy, cx, cy]
    if model == "SIMPLE_RADIAL":
        return [fx, cx, cy, _SIMPLE_RADIAL_K]
    return [fx, fy, cx, cy, *_OPENCV_DIST]


def project_distorted(points: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions of world points in the distorted image, and their z-depth."""
    pc = points @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = pc[:, :2] / z[:, None]
    xyd = distort(xy, model)
    uv = np.stack([K[0, 0] * xyd[:, 0] + K[0, 2], K[1, 1] * xyd[:, 1] + K[1, 2]], axis=1)
    return uv, z


def write_colmap_model(
    folder: Path,
    scene,
    views: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    K: np.ndarray,
    width: int,
    height: int,
    camera_model: str = "OPENCV",
    n_points: int = 3000,
    seed: int = 0,
) -> dict[str, int]:
    """Write ``folder/images/*.png`` and ``folder/sparse/0/*.txt``.

    ``views`` are ``(name, pinhole rgb, pinhole z-depth, cam_from_world)``. Points
    are back-projected from random valid pixels of the pinhole depth maps; a point's
    track holds every image where it projects inside the distorted image and is not
    occluded (its z equals the exact ray-cast depth at its projection).
    """
    from depthcli.io.images import write_image_rgb

    rng = np.random.default_rng(seed + 7919)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    sparse = folder / "sparse" / "0"
    sparse.mkdir(parents=True, exist_ok=True)

    # Images: render through the distortion (pinhole views are reused as they are).
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    uv_d = np.stack([u.ravel() + 0.5, v.ravel() + 0.5], axis=1)
    xy_d = np.stack([(uv_d[:, 0] - K[0, 2]) / K[0, 0], (uv_d[:, 1] - K[1, 2]) / K[1, 1]], axis=1)
    xy = undistort(xy_d, camera_model)
    for name, rgb, _, pose in views:
        if camera_model != "PINHOLE":
            rgb, _ = scene.render_normalized(xy, pose, width, height)
        write_image_rgb(folder / "images" / f"{name}.png", rgb)

    # Points on visible surfaces, with their colour in the source view.
    per_view = max(1, n_points // len(views))
    pts, cols = [], []
    for name, rgb, depth, pose in views:
        rows, cs = np.nonzero(depth > 0)
        if len(rows) == 0:
            continue
        pick = rng.choice(len(rows), size=min(per_view, len(rows)), replace=False)
        r, c = rows[pick], cs[pick]
        uv = np.stack([c + rng.uniform(0.05, 0.95, len(c)), r + rng.uniform(0.05, 0.95, len(r))], axis=1)
        z = scene.depth_at(K, pose, uv)
        ok = z > 0
        xyz_c = np.stack([(uv[ok, 0] - K[0, 2]) / K[0, 0] * z[ok], (uv[ok, 1] - K[1, 2]) / K[1, 1] * z[ok], z[ok]], axis=1)
        wfc = np.linalg.inv(pose)
        pts.append(xyz_c @ wfc[:3, :3].T + wfc[:3, 3])
        cols.append(rgb[r[ok], c[ok]])
    points = np.concatenate(pts) if pts else np.zeros((0, 3))
    colours = np.concatenate(cols) if cols else np.zeros((0, 3), np.uint8)

    # Tracks: visible = inside the distorted image, in front, and not occluded.
    obs: list[list[tuple[float, float, int]]] = [[] for _ in views]
    tracks: list[list[tuple[int, int]]] = [[] for _ in range(len(points))]
    for j, (_, _, _, pose) in enumerate(views):
        uv, z = project_distorted(points, K, pose, camera_model)
        inside = (z > 1e-6) & np.isfinite(uv).all(1) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
        idx = np.nonzero(inside)[0]
        if len(idx) == 0:
            continue
        pc = points[idx] @ pose[:3, :3].T + pose[:3, 3]
        uv_pin = np.stack([K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2], K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2]], axis=1)
        z_exact = scene.depth_at(K, pose, uv_pin)
        visible = np.abs(z_exact - pc[:, 2]) <= 1e-6 * pc[:, 2]
        for p in idx[visible]:
            tracks[p].append((j + 1, len(obs[j])))
            obs[j].append((uv[p, 0], uv[p, 1], p + 1))
    keep = [len(t) >= 2 for t in tracks]

    params = " ".join(f"{p:.17g}" for p in camera_params(camera_model, K))
    (sparse / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n"
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"1 {camera_model} {width} {height} {params}\n"
    )
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for j, (name, _, _, pose) in enumerate(views):
        q = quaternion_from_rotation(pose[:3, :3])
        t = pose[:3, 3]
        lines.append(f"{j + 1} " + " ".join(f"{x:.17g}" for x in (*q, *t)) + f" 1 {name}.png")
        lines.append(" ".join(f"{x:.17g} {y:.17g} {pid if keep[pid - 1] else -1}" for x, y, pid in obs[j]))
    (sparse / "images.txt").write_text("\n".join(lines) + "\n")
    plines = ["# 3D point list with one line of data per point:",
              "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    for p in range(len(points)):
        if not keep[p]:
            continue
        x, y, z = points[p]
        r, g, b = (int(c) for c in colours[p])
        track = " ".join(f"{im} {k}" for im, k in tracks[p])
        plines.append(f"{p + 1} {x:.17g} {y:.17g} {z:.17g} {r} {g} {b} 0 {track}")
    (sparse / "points3D.txt").write_text("\n".join(plines) + "\n")
    return {"points": int(sum(keep)), "observations": int(sum(len(t) for t, k in zip(tracks, keep) if k))}


def write_7scenes(folder: Path, views: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], K: np.ndarray) -> None:
    """7-Scenes layout: colour png, depth png (uint16 millimetres, 0 = invalid), camera-to-world pose."""
    from depthcli.io.depth_files import write_depth_png16
    from depthcli.io.images import write_image_rgb

    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "camera-intrinsics.txt", K, fmt="%.17g")
    for name, rgb, depth, pose in views:
        write_image_rgb(folder / f"{name}.color.png", rgb)
        write_depth_png16(folder / f"{name}.depth.png", depth, 1000.0)  # > 65.535 m -> 0
        np.savetxt(folder / f"{name}.pose.txt", np.linalg.inv(pose), fmt="%.17g")
