"""TartanAir trajectory -> depth dataset (files: :mod:`depthcli.io.tartanair`).

SOURCE is one trajectory folder (``ENV/Easy/P000``). Depth ``.npy`` is already
z-depth in metres (not disparity: TartanAir's disparity would be 80 / depth);
the sky sphere's large values (>= :data:`SKY_DEPTH_M`) become invalid (0).
Poses are NED (x forward, y right, z down) camera-to-world; the stored
cam_from_world uses OpenCV camera axes in TartanAir's (NED) world frame. K is
the published fx = fy = 320, cx = 320, cy = 240, taken as the exact centre of
the 640x480 render (cx = W / 2 in depthcli's convention).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from depthcli.convert.common import PlannedFrame, write_frames
from depthcli.convert.config import ConvertConfig
from depthcli.errors import DepthcliError
from depthcli.geometry import invert_rigid, make_K, rotation_from_quaternion
from depthcli.io import tartanair as files

KINDS = ("tartanair",)
#: the sky sphere sits at a large distance (TartanAir: "e.g. 10000"); this far or farther -> invalid
SKY_DEPTH_M = 5000.0
#: OpenCV camera axes expressed in NED camera axes: ned = CV_TO_NED @ cv
CV_TO_NED = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def detect(source: Path) -> tuple[str, str] | None:
    source = Path(source)
    sides = [s for s in ("left", "right") if (source / f"depth_{s}").is_dir() and (source / f"pose_{s}.txt").is_file()]
    if not sides:
        return None
    return "tartanair", f"TartanAir trajectory (depth_{'/'.join(sides)} + pose_*.txt)"


def world_from_cam_cv(pose: np.ndarray) -> np.ndarray:
    """``tx ty tz qx qy qz qw`` (NED camera in the world) -> world_from_cam with OpenCV camera axes."""
    t, (qx, qy, qz, qw) = pose[:3], pose[3:]
    q = np.array([qw, qx, qy, qz])
    if np.linalg.norm(q) < 1e-12:
        raise DepthcliError(f"TartanAir pose {pose.tolist()} has a zero quaternion")
    T = np.eye(4)
    T[:3, :3] = rotation_from_quaternion(q) @ CV_TO_NED
    T[:3, 3] = t
    return T


def _load(path: Path) -> np.ndarray:
    d = files.read_depth_npy(path)
    d[~np.isfinite(d) | (d >= SKY_DEPTH_M)] = 0.0
    return d


def convert_source(cfg: ConvertConfig, folder: Path, kind: str = "tartanair") -> dict[str, Any]:
    src = Path(cfg.source)
    sides = [s for s in ("left", "right") if (src / f"depth_{s}").is_dir()]
    if not sides:
        raise DepthcliError(f"'{src}' is not a TartanAir trajectory (no depth_left/ or depth_right/)", "pass e.g. abandonedfactory/Easy/P000")
    K = make_K(*files.INTRINSICS)
    frames = []
    for side in sides:
        poses = files.read_poses(src / f"pose_{side}.txt")
        for path in sorted((src / f"depth_{side}").glob(f"*_{side}_depth.npy")):
            m = re.match(r"(\d+)_", path.name)
            if m is None:
                continue
            index = int(m.group(1))
            if index >= len(poses):
                raise DepthcliError(f"'{path.name}' has no line in pose_{side}.txt ({len(poses)} poses)")
            image = src / f"image_{side}" / f"{m.group(1)}_{side}.png"
            frames.append(
                PlannedFrame(
                    name=f"{side}/{m.group(1)}",
                    load_depth=lambda path=path: _load(path),
                    K=K,
                    cam_from_world=invert_rigid(world_from_cam_cv(poses[index])),
                    image=image if image.is_file() else None,
                )
            )
    source = {
        "kind": "tartanair",
        "path": str(src.absolute()),
        "depth_conversion": f"z-depth in metres as stored (.npy); >= {SKY_DEPTH_M:g} m (sky) -> 0",
        "poses": "pose_*.txt NED camera-to-world -> cam_from_world with OpenCV camera axes, NED world",
    }
    summary = write_frames(cfg, folder, frames, label="tartanair", depth_units="m", source=source)
    summary["depth_conversion"] = f"metres as stored (z, not disparity); sky (>= {SKY_DEPTH_M:g} m) -> invalid"
    return summary
