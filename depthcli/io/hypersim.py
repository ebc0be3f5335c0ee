"""Hypersim files (apple/ml-hypersim): depth HDF5, camera-parameter CSV, camera keyframes.

Only reading; the conversion to a dataset is :mod:`depthcli.convert.hypersim`.
Facts used (Hypersim's README and ``contrib/mikeroberts3000`` notes):

* ``SCENE/images/scene_cam_XX_geometry_hdf5/frame.IIII.depth_meters.hdf5``:
  HDF5 dataset ``dataset``, float16 ``[H, W]``, the Euclidean distance from the
  optical centre (range, not z) in metres; NaN where no geometry was hit.
* ``SCENE/images/scene_cam_XX_final_preview/frame.IIII.tonemap.jpg``: the
  tone-mapped colour image (optional here: depth-only frames are allowed).
* ``SCENE/_detail/cam_XX/camera_keyframe_orientations.hdf5`` ``[N, 3, 3]``
  (camera -> world rotations, OpenGL camera axes: x right, y up, +z away from
  the view direction) and ``camera_keyframe_positions.hdf5`` ``[N, 3]``
  (camera centres in asset units); frame ``IIII`` uses keyframe ``IIII``.
* ``metadata_camera_parameters.csv`` (one row per scene): image size,
  ``settings_units_info_meters_scale`` (metres per asset unit) and
  ``M_cam_from_uv_ij``, which maps ``(u, v, 1)`` with u in [-1, 1] left to right
  and v in [-1, 1] bottom to top (at pixel centres) to a ray in the camera frame.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from depthcli.errors import DepthcliError

CAMERA_PARAMETERS_CSV = "metadata_camera_parameters.csv"


def import_h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise DepthcliError("reading Hypersim needs h5py", "pip install h5py") from None
    return h5py


def read_h5_dataset(path: Path, key: str = "dataset") -> np.ndarray:
    """The array ``key`` of an HDF5 file; a missing or unreadable file is a clear error."""
    h5py = import_h5py()
    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"Hypersim file '{path}' does not exist")
    try:
        with h5py.File(path, "r") as fh:
            if key not in fh:
                raise DepthcliError(f"'{path}' has no HDF5 dataset '{key}'", "is it a Hypersim file?")
            return np.asarray(fh[key][()])
    except OSError as exc:
        raise DepthcliError(f"cannot read HDF5 file '{path}': {str(exc).splitlines()[0]}") from None


def read_range_meters(path: Path) -> np.ndarray:
    """``[H, W]`` float32 range (distance to the optical centre) in metres; NaN/Inf/<= 0 -> 0."""
    arr = read_h5_dataset(path)
    if arr.ndim != 2:
        raise DepthcliError(f"'{path}' holds a {arr.ndim}-D array, a Hypersim depth map is 2-D (H x W)")
    out = arr.astype(np.float32)
    out[~np.isfinite(out) | (out <= 0)] = 0.0
    return out


def read_camera_parameters(path: Path, scene: str) -> dict[str, str]:
    """The row of ``scene`` in a ``metadata_camera_parameters.csv``."""
    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"camera-parameters file '{path}' does not exist")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "scene_name" not in reader.fieldnames:
            raise DepthcliError(f"'{path}' is not Hypersim's {CAMERA_PARAMETERS_CSV} (no scene_name column)")
        for row in reader:
            if row.get("scene_name") == scene:
                return row
    raise DepthcliError(f"'{path}' has no row for scene '{scene}'", "pass the CSV that lists this scene (--camera-parameters)")


def _number(row: dict[str, str], key: str, path: Path) -> float:
    try:
        value = float(row[key])
    except (KeyError, TypeError, ValueError):
        raise DepthcliError(f"'{path}': column '{key}' is missing or not a number") from None
    if not np.isfinite(value):
        raise DepthcliError(f"'{path}': column '{key}' is not finite ({row[key]})")
    return value


def camera_from_row(row: dict[str, str], path: Path) -> tuple[np.ndarray, int, int, float | None]:
    """``(M_cam_from_uv [3, 3], width, height, metres per asset unit or None)`` of a CSV row."""
    M = np.array([[_number(row, f"M_cam_from_uv_{i}{j}", path) for j in range(3)] for i in range(3)])
    width = _number(row, "settings_output_img_width", path)
    height = _number(row, "settings_output_img_height", path)
    if width < 1 or height < 1 or width != int(width) or height != int(height):
        raise DepthcliError(f"'{path}': image size {width} x {height} is not a positive whole number of pixels")
    scale = None
    if row.get("settings_units_info_meters_scale") not in (None, ""):
        scale = _number(row, "settings_units_info_meters_scale", path)
    return M, int(width), int(height), scale


def read_meters_per_asset_unit(scene: Path) -> float | None:
    """``meters_per_asset_unit`` from ``SCENE/_detail/metadata_scene.csv`` (parameter_name, parameter_value), if present."""
    path = Path(scene) / "_detail" / "metadata_scene.csv"
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            if len(row) >= 2 and row[0].strip() == "meters_per_asset_unit":
                try:
                    return float(row[1])
                except ValueError:
                    raise DepthcliError(f"'{path}': meters_per_asset_unit '{row[1]}' is not a number") from None
    return None


def read_keyframes(camera_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(orientations [N, 3, 3] camera->world, positions [N, 3] asset units)`` of ``_detail/cam_XX``."""
    camera_dir = Path(camera_dir)
    R = read_h5_dataset(camera_dir / "camera_keyframe_orientations.hdf5").astype(np.float64)
    p = read_h5_dataset(camera_dir / "camera_keyframe_positions.hdf5").astype(np.float64)
    if R.ndim != 3 or R.shape[1:] != (3, 3) or p.ndim != 2 or p.shape[1] != 3 or len(R) != len(p):
        raise DepthcliError(f"camera keyframes in '{camera_dir}' have shapes {R.shape} and {p.shape}, expected [N,3,3] and [N,3]")
    return R, p
