"""Hypersim scenes -> depth dataset (files read by :mod:`depthcli.io.hypersim`).

Hypersim's cameras are off-centre and may be slightly tilted: each scene's
``M_cam_from_uv`` maps normalised image coordinates to rays. Written in depthcli's
pixel convention (pixel (col, row) has centre (col + 0.5, row + 0.5)) and OpenCV
axes, the map from pixel to ray is ``B = F @ M @ A`` with ``A`` pixel -> (u, v, 1)
and ``F = diag(1, -1, -1)`` (OpenGL -> OpenCV axes). Its inverse factors as
``B^-1 = K @ R`` (RQ decomposition, K upper-triangular with positive diagonal,
R a rotation): K is the pinhole the dataset stores and R the rotation from
Hypersim's camera frame to that pinhole's frame, which goes into cam_from_world.

Depth: Hypersim stores range (distance to the optical centre). The stored value
is z along the pinhole's optical axis: ``z = range / |K^-1 (x, y, 1)|`` at the
pixel centre (x, y); NaN (no geometry) becomes 0. Poses: keyframe orientation
and position (asset units, scaled to metres) give world_from_cam in OpenGL axes;
``cam_from_world = R @ F @ [R_o^T, -R_o^T s p]``. The world is Hypersim's, in metres.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from depthcli.convert.common import PlannedFrame, write_frames
from depthcli.convert.config import ConvertConfig
from depthcli.errors import DepthcliError
from depthcli.io import hypersim as files

KINDS = ("hypersim",)

#: Largest |skew| / fx accepted: depthcli's K has no skew term.
MAX_SKEW = 1e-6
_GEOMETRY_DIR = re.compile(r"scene_(cam_\d+)_geometry_hdf5$")
_DEPTH_FILE = re.compile(r"frame\.(\d+)\.depth_meters\.hdf5$")
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


def _geometry_dirs(scene: Path) -> list[Path]:
    images = scene / "images"
    if not images.is_dir():
        return []
    return sorted(p for p in images.iterdir() if p.is_dir() and _GEOMETRY_DIR.search(p.name))


def detect(source: Path) -> tuple[str, str] | None:
    dirs = _geometry_dirs(Path(source))
    if not dirs:
        return None
    n = sum(len(list(d.glob("frame.*.depth_meters.hdf5"))) for d in dirs)
    if n == 0:
        return None
    return "hypersim", f"Hypersim scene ({len(dirs)} camera(s), {n} depth_meters.hdf5 frame(s))"


def rq(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``X = K @ R`` with K upper-triangular (positive diagonal) and R orthogonal."""
    P = np.eye(3)[::-1]
    Q, U = np.linalg.qr((P @ X).T)
    K = P @ U.T @ P
    R = P @ Q.T
    S = np.diag(np.sign(np.diag(K)))
    return K @ S, S @ R


def pinhole_from_cam_from_uv(M: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """``(K, R)`` of a Hypersim ``M_cam_from_uv``: K the pinhole in pixels, R = pinhole_from_hypersim_cam (OpenCV axes)."""
    A = np.array([[2.0 / width, 0.0, -1.0], [0.0, -2.0 / height, 1.0], [0.0, 0.0, 1.0]])
    B = OPENGL_TO_OPENCV @ np.asarray(M, dtype=np.float64) @ A
    if not np.isfinite(B).all() or abs(np.linalg.det(B)) < 1e-300:
        raise DepthcliError("Hypersim M_cam_from_uv is singular or not finite")
    K, R = rq(np.linalg.inv(B))
    K = K / K[2, 2]
    if np.linalg.det(R) < 0:
        raise DepthcliError("Hypersim M_cam_from_uv mirrors the image (no rotation maps it to a pinhole)")
    if abs(K[0, 1]) > MAX_SKEW * K[0, 0]:
        raise DepthcliError(f"Hypersim camera has skewed pixels (skew {K[0, 1]:.3g} px), which a pinhole K cannot hold")
    K[0, 1] = 0.0
    return K, R


def z_from_range(rng: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Range (distance to the optical centre) -> z along K's optical axis, at pixel centres; 0 stays 0."""
    h, w = rng.shape
    x = (np.arange(w, dtype=np.float64) + 0.5 - K[0, 2]) / K[0, 0]
    y = (np.arange(h, dtype=np.float64) + 0.5 - K[1, 2]) / K[1, 1]
    norm = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + 1.0)
    return (rng.astype(np.float64) / norm).astype(np.float32)


def find_camera_parameters(scene: Path, given: Path | None) -> Path:
    if given is not None:
        if not Path(given).is_file():
            raise DepthcliError(f"camera-parameters file '{given}' does not exist", "check --camera-parameters")
        return Path(given)
    scene = Path(scene).absolute()
    for folder in [scene, scene / "_detail", *list(scene.parents)[:4]]:
        cand = folder / files.CAMERA_PARAMETERS_CSV
        if cand.is_file():
            return cand
    raise DepthcliError(
        f"no {files.CAMERA_PARAMETERS_CSV} beside or above '{scene}'",
        "pass it with --camera-parameters (ml-hypersim: contrib/mikeroberts3000/metadata_camera_parameters.csv)",
    )


def _rotation(R: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(R).all():
        raise DepthcliError(f"{what} is not finite")
    u, s, vt = np.linalg.svd(R)
    if np.abs(s - 1).max() > 1e-3 or np.linalg.det(u @ vt) < 0:
        raise DepthcliError(f"{what} is not a rotation")
    return u @ vt


def convert_source(cfg: ConvertConfig, folder: Path, kind: str = "hypersim") -> dict[str, Any]:
    scene = Path(cfg.source)
    dirs = _geometry_dirs(scene)
    if not dirs:
        raise DepthcliError(f"'{scene}' is not a Hypersim scene (no images/scene_cam_XX_geometry_hdf5/)", "pass the scene folder, e.g. ai_037_002")
    csv_path = find_camera_parameters(scene, cfg.camera_parameters)
    row = files.read_camera_parameters(csv_path, scene.absolute().name)
    M, width, height, csv_scale = files.camera_from_row(row, csv_path)
    scene_scale = files.read_meters_per_asset_unit(scene)
    scale = scene_scale if scene_scale is not None else csv_scale
    if scale is None or not np.isfinite(scale) or scale <= 0:
        raise DepthcliError(
            f"unknown asset units for '{scene}': no meters_per_asset_unit in _detail/metadata_scene.csv "
            f"and no settings_units_info_meters_scale in '{csv_path}'",
            "camera positions cannot be put in metres without it",
        )
    K, R_pin = pinhole_from_cam_from_uv(M, width, height)
    tilt_deg = float(np.degrees(np.arccos(np.clip((np.trace(R_pin) - 1) / 2, -1, 1))))

    frames: list[PlannedFrame] = []
    for gdir in dirs:
        cam = _GEOMETRY_DIR.search(gdir.name).group(1)  # type: ignore[union-attr]
        cam_dir = scene / "_detail" / cam
        if not cam_dir.is_dir():
            raise DepthcliError(f"'{cam_dir}' is missing: the poses of {cam} are unknown", "Hypersim keeps them in SCENE/_detail/cam_XX/")
        orient, pos = files.read_keyframes(cam_dir)
        preview = scene / "images" / f"scene_{cam}_final_preview"
        for path in sorted(gdir.glob("frame.*.depth_meters.hdf5")):
            index = int(_DEPTH_FILE.search(path.name).group(1))  # type: ignore[union-attr]
            if index >= len(orient):
                raise DepthcliError(f"'{path.name}' of {cam} has no camera keyframe ({len(orient)} in '{cam_dir}')")
            R_o = _rotation(orient[index], f"{cam} keyframe {index} orientation")
            p = pos[index]
            if not np.isfinite(p).all():
                raise DepthcliError(f"{cam} keyframe {index} position {p.tolist()} is not finite")
            R = R_pin @ OPENGL_TO_OPENCV @ R_o.T
            cam_from_world = np.eye(4)
            cam_from_world[:3, :3] = R
            cam_from_world[:3, 3] = -R @ (scale * p)
            image = preview / f"frame.{index:04d}.tonemap.jpg"

            def load(path: Path = path) -> np.ndarray:
                rng = files.read_range_meters(path)
                if rng.shape != (height, width):
                    raise DepthcliError(f"'{path}' is {rng.shape[1]}x{rng.shape[0]}, the scene's camera is {width}x{height}")
                return z_from_range(rng, K)

            frames.append(
                PlannedFrame(
                    name=f"{cam}/{index:04d}",  # file stem cam_00_0000 (a "." would be read as a suffix)
                    load_depth=load,
                    K=K,
                    cam_from_world=cam_from_world,
                    image=image if image.is_file() else None,
                    extra={"source_depth": str(path.relative_to(scene))},
                )
            )
    conversion = "range (distance to the optical centre) -> z along the stored K's optical axis: z = range / |K^-1 (x, y, 1)|"
    source = {
        "kind": "hypersim",
        "path": str(scene.absolute()),
        "camera_parameters": str(csv_path.absolute()),
        "depth_conversion": conversion,
        "pinhole_tilt_deg": tilt_deg,
        "meters_per_asset_unit": scale,
        "world": "Hypersim world frame, metres",
    }
    summary = write_frames(cfg, folder, frames, label="hypersim", depth_units="m", source=source)
    summary.update(
        {
            "depth_conversion": "Hypersim range -> z-depth (along the pinhole axis)",
            "intrinsics": f"pinhole of M_cam_from_uv: fx {K[0, 0]:.2f} fy {K[1, 1]:.2f} cx {K[0, 2]:.2f} cy {K[1, 2]:.2f}",
            "camera_tilt": f"{tilt_deg:.2f} deg (in cam_from_world)",
            "images": sum(f.image is not None for f in frames),
        }
    )
    return summary
