"""nerfstudio projects (``transforms.json``): read and write the file format.

A nerfstudio project is a folder with ``transforms.json`` and the files it
names. The keys below are the ones nerfstudio's own parser
(``nerfstudio/data/dataparsers/nerfstudio_dataparser.py``) reads:

* intrinsics ``fl_x fl_y cx cy w h`` and distortion ``k1 k2 k3 k4 p1 p2``,
  either once at the top level (shared by every frame) or in every frame;
* ``camera_model`` (``OPENCV``, ``PINHOLE``, ``SIMPLE_PINHOLE``, ... fisheye and
  spherical models exist too);
* per frame ``file_path`` (image), ``transform_matrix`` (4x4
  **camera-to-world** with **OpenGL camera axes**: x right, y up, z back, the
  camera looks along -z), optional ``depth_file_path`` and ``mask_path``;
* optional ``ply_file_path`` (a point cloud in the same world frame),
  ``applied_transform`` / ``applied_scale`` (what a converter already applied
  to the poses), ``orientation_override`` and ``train_filenames`` /
  ``val_filenames`` / ``test_filenames``.

Depth files are 16-bit PNG (or ``.npy``); nerfstudio multiplies the stored
value by ``depth_unit_scale_factor`` (a parser option, default 0.001: stored
millimetres) to get metres. This module also reads that key from
``transforms.json`` when present (depthcli writes it there). Depth is z-depth.

Pixel centres: nerfstudio generates the ray of pixel (row, col) through
``(col + 0.5, row + 0.5)`` (``Cameras.get_image_coords(pixel_offset=0.5)``),
COLMAP's convention, which depthcli uses, so ``cx``/``cy`` are copied
unchanged in both directions (no half-pixel shift; OpenCV's integer-centre
convention would need one).

Only the file format lives here; turning a project into a depth dataset is
the converter's job.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from depthcli.errors import DepthcliError

TRANSFORMS = "transforms.json"
#: Flips y and z: OpenCV camera axes (x right, y down, z forward) <-> OpenGL (x right, y up, z back).
#: ``world_from_cam_gl = world_from_cam_cv @ GL_FROM_CV`` (and back, the matrix is its own inverse).
GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])
#: nerfstudio's default ``depth_unit_scale_factor``: stored depth x 0.001 = metres.
DEFAULT_DEPTH_UNIT_SCALE = 1e-3
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
#: Camera models with a pinhole projection once their distortion is zero.
PERSPECTIVE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")


@dataclass
class NerfstudioFrame:
    """One frame of a project, in depthcli's conventions."""

    name: str  #: the frame's name: ``depthcli_name`` when depthcli wrote it, else ``file_path``
    file_path: str  #: the image path as written in transforms.json (frames are sorted by it)
    image: Path  #: absolute path of the image
    depth: Path | None  #: absolute path of the depth file, None without ``depth_file_path``
    width: int
    height: int
    K: np.ndarray  #: [3, 3] pinhole intrinsics (pixel centres at +0.5, as nerfstudio and COLMAP)
    cam_from_world: np.ndarray  #: [4, 4] world -> camera, OpenCV axes


@dataclass
class NerfstudioProject:
    """A parsed ``transforms.json``."""

    root: Path
    frames: list[NerfstudioFrame]
    depth_unit_scale_factor: float  #: stored depth value x this = depth in ``depth_units``
    depth_units: str  #: "m" unless depthcli wrote the project from SfM units
    camera_model: str
    ply_path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)  #: other top-level keys (applied_transform, ...)


def detect(source: Path) -> str | None:
    """A reason string if ``source`` is a nerfstudio project (folder or transforms.json), else None."""
    source = Path(source)
    if source.is_file() and source.suffix == ".json":
        return f"nerfstudio project ({source.name})"
    if (source / TRANSFORMS).is_file():
        return f"nerfstudio project ({TRANSFORMS})"
    return None


def _float(d: dict, key: str, where: str) -> float:
    try:
        v = float(d[key])
    except KeyError:
        raise DepthcliError(f"{where}: '{key}' is missing", "each frame (or the top level) needs fl_x, fl_y, cx, cy, w, h") from None
    except (TypeError, ValueError):
        raise DepthcliError(f"{where}: '{key}' must be a number, got {d[key]!r}") from None
    if not math.isfinite(v):
        raise DepthcliError(f"{where}: '{key}' is not finite ({d[key]!r})")
    return v


def _rigid_from_json(value: Any, where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise DepthcliError(f"{where}: 'transform_matrix' must be a finite 4x4 (or 3x4) matrix")
    R = m[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-4) or np.linalg.det(R) <= 0 or not np.allclose(m[3], [0, 0, 0, 1]):
        raise DepthcliError(
            f"{where}: 'transform_matrix' is not a rigid camera-to-world transform (rotation not orthonormal)",
            "poses scaled by a converter cannot be read as they are; export them without scaling",
        )
    return m


def read_transforms(source: Path) -> NerfstudioProject:
    """Parse a project folder (or a ``transforms.json`` path) into depthcli conventions.

    Refuses what depthcli cannot represent exactly: non-perspective camera models
    and non-zero distortion (depthcli stores undistorted pinhole images).
    """
    source = Path(source)
    path = source if source.is_file() else source / TRANSFORMS
    if not path.is_file():
        raise DepthcliError(f"'{source}' has no {TRANSFORMS}", "pass a nerfstudio project folder")
    root = path.parent
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DepthcliError(f"'{path}' is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise DepthcliError(f"'{path}' has no 'frames' list", "is it a nerfstudio transforms.json?")
    model = str(meta.get("camera_model", "OPENCV"))
    if model not in PERSPECTIVE_MODELS:
        raise DepthcliError(
            f"'{path}': camera_model {model} is not a perspective camera",
            "depthcli reads pinhole projects (OPENCV / PINHOLE with zero distortion)",
        )
    factor = meta.get("depth_unit_scale_factor", DEFAULT_DEPTH_UNIT_SCALE)
    try:
        factor = float(factor)
    except (TypeError, ValueError):
        factor = float("nan")
    if not (math.isfinite(factor) and factor > 0):
        raise DepthcliError(f"'{path}': depth_unit_scale_factor must be a positive number, got {meta.get('depth_unit_scale_factor')!r}")
    info = meta.get("depthcli") if isinstance(meta.get("depthcli"), dict) else {}
    units = str(info.get("depth_units", "m"))
    if units not in ("m", "sfm"):
        raise DepthcliError(f"'{path}': depthcli.depth_units must be 'm' or 'sfm', got {units!r}")

    frames: list[NerfstudioFrame] = []
    with_depth = 0
    for i, fj in enumerate(meta["frames"]):
        where = f"{path} frame {i}"
        if not isinstance(fj, dict) or "file_path" not in fj or "transform_matrix" not in fj:
            raise DepthcliError(f"{where}: needs 'file_path' and 'transform_matrix'")
        src = {**meta, **fj}  # per-frame values win over shared ones
        fx, fy, cx, cy = (_float(src, k, where) for k in ("fl_x", "fl_y", "cx", "cy"))
        w, h = int(_float(src, "w", where)), int(_float(src, "h", where))
        if fx <= 0 or fy <= 0 or w <= 0 or h <= 0:
            raise DepthcliError(f"{where}: focal lengths and image size must be positive")
        dist = {k: float(src[k]) for k in DISTORTION_KEYS if k in src}
        if any(v != 0.0 for v in dist.values()):
            nonzero = ", ".join(f"{k}={v:g}" for k, v in dist.items() if v != 0.0)
            raise DepthcliError(
                f"{where}: the camera is distorted ({nonzero}); depthcli stores undistorted pinhole images",
                "undistort the images first (e.g. run COLMAP's image_undistorter and convert the COLMAP model)",
            )
        world_from_cam_gl = _rigid_from_json(fj["transform_matrix"], where)
        world_from_cam_cv = world_from_cam_gl @ GL_FROM_CV
        from depthcli.geometry import invert_rigid, make_K

        depth = None
        if fj.get("depth_file_path"):
            depth = root / str(fj["depth_file_path"])
            with_depth += 1
        frames.append(
            NerfstudioFrame(
                name=str(fj.get("depthcli_name") or fj["file_path"]),
                file_path=str(fj["file_path"]),
                image=root / str(fj["file_path"]),
                depth=depth,
                width=w,
                height=h,
                K=make_K(fx, fy, cx, cy),
                cam_from_world=invert_rigid(world_from_cam_cv),
            )
        )
    if 0 < with_depth < len(frames):
        raise DepthcliError(
            f"'{path}': {with_depth} of {len(frames)} frames have a depth_file_path",
            "nerfstudio needs depth for every frame or for none",
        )
    frames.sort(key=lambda f: f.file_path)  # nerfstudio orders frames by file name too
    ply = root / str(meta["ply_file_path"]) if meta.get("ply_file_path") else None
    rest = {k: v for k, v in meta.items() if k != "frames"}
    return NerfstudioProject(root, frames, factor, units, model, ply, rest)


def read_depth(frame: NerfstudioFrame, depth_unit_scale_factor: float) -> np.ndarray:
    """``[H, W]`` float32 depth (stored value x factor); 0 = invalid, as nerfstudio reads it."""
    from depthcli.io.depth_files import read_depth_file

    if frame.depth is None:
        raise DepthcliError(f"frame '{frame.name}' has no depth_file_path")
    suffix = frame.depth.suffix.lower()
    if suffix == ".png":
        d = read_depth_file(frame.depth, 1.0 / depth_unit_scale_factor)
    elif suffix == ".npy":
        d = read_depth_file(frame.depth) * np.float32(depth_unit_scale_factor)
    else:
        raise DepthcliError(f"depth file '{frame.depth}' is neither .png (16-bit) nor .npy")
    if d.shape != (frame.height, frame.width):
        raise DepthcliError(
            f"depth of frame '{frame.name}' is {d.shape[1]}x{d.shape[0]}, transforms.json says {frame.width}x{frame.height}"
        )
    d = d.astype(np.float32)
    d[~np.isfinite(d) | (d < 0)] = 0
    return d


def transform_matrix_from_cam_from_world(cam_from_world: np.ndarray) -> np.ndarray:
    """nerfstudio's ``transform_matrix`` (camera-to-world, OpenGL axes) of an OpenCV ``cam_from_world``."""
    from depthcli.geometry import invert_rigid

    return invert_rigid(np.asarray(cam_from_world, dtype=np.float64)) @ GL_FROM_CV


def intrinsics_json(K: np.ndarray, width: int, height: int) -> dict[str, Any]:
    """The intrinsic keys of one camera (zero distortion: depthcli images are undistorted)."""
    d: dict[str, Any] = {
        "fl_x": float(K[0, 0]),
        "fl_y": float(K[1, 1]),
        "cx": float(K[0, 2]),
        "cy": float(K[1, 2]),
        "w": int(width),
        "h": int(height),
    }
    d.update({k: 0.0 for k in DISTORTION_KEYS})
    return d
