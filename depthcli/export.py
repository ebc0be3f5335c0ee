"""``export``: a depth dataset -> a nerfstudio project, a COLMAP model or a point cloud.

* ``nerfstudio``: ``transforms.json`` (camera-to-world in OpenGL axes, pinhole
  intrinsics with zero distortion, ``camera_model: OPENCV``), ``images/``, 16-bit
  depth PNGs (millimetres for metric data, ``depth_unit_scale_factor`` 0.001) and
  ``sparse_pc.ply`` (``ply_file_path``: the coloured, voxel-downsampled cloud of
  back-projected depth). Format facts: :mod:`depthcli.io.nerfstudio`.
* ``colmap``: ``images/`` + ``sparse/0/{cameras,images,points3D}.txt`` (PINHOLE
  cameras, poses = cam_from_world, points back-projected from depth, each observed
  by the frame it came from at the pixel it came from): the layout gsplat's
  COLMAP loader and Inria's 3DGS ``train.py -s`` read.
* ``ply``: ``points.ply``, the coloured, voxel-downsampled point cloud.

Poses, intrinsics and the world frame are never changed (no re-centring or
scaling); depth must be z-depth in metres or SfM units.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from depthcli.errors import DepthcliError

EXPORT_FORMATS = ("nerfstudio", "colmap", "ply")


@dataclass
class ExportConfig:
    """Settings of :func:`export_dataset` (CLI flags map onto these fields)."""

    dataset: Path  #: the depth dataset to export
    out: Path  #: the folder to create
    to: str  #: one of EXPORT_FORMATS
    overwrite: bool = False  #: replace an existing ``out``
    voxel_size: float | None = None  #: point-cloud voxel edge in dataset units; None = 4 pixels at the median depth
    stride: int = 1  #: point cloud: back-project every ``stride``-th pixel in each direction
    points_per_frame: int = 2000  #: COLMAP: 3D points sampled from each frame's valid depth
    depth_scale: float | None = None  #: nerfstudio: stored = depth x scale (default 1000 for metres)
    seed: int = 0  #: COLMAP point sampling

    def validate(self) -> None:
        """Refuse out-of-range settings (one line each) before anything is read or written."""
        from depthcli.validate import check_choice, check_int, check_positive, check_seed

        check_choice(self.to, "export format (--to)", EXPORT_FORMATS)
        check_positive(self.voxel_size, "--voxel-size", optional=True)
        check_int(self.stride, "--stride", min=1, max=4096)
        check_int(self.points_per_frame, "--points-per-frame", min=1, max=10**8)
        check_positive(self.depth_scale, "--depth-scale", optional=True)
        check_seed(self.seed)


class VoxelAccumulator:
    """Average points (and colours) per cubic voxel, frame by frame, in bounded memory.

    Each added batch is reduced to its voxels at once; reduced batches are merged
    when they pile up, so memory follows the number of occupied voxels.
    """

    _BITS = 21  # voxel indices within +-2^20 per axis pack into one int64 key

    def __init__(self, voxel_size: float):
        self.voxel = float(voxel_size)
        self.keys = np.zeros(0, np.int64)
        self.sums = np.zeros((0, 7), np.float64)  # x y z r g b count
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_n = 0
        self._origin: np.ndarray | None = None  # voxel index packed as 0 (the first batch's middle)

    def _pack(self, idx: np.ndarray) -> np.ndarray:
        half = 1 << (self._BITS - 1)
        if self._origin is None:
            self._origin = (idx.min(axis=0) + idx.max(axis=0)) // 2
        idx = idx - self._origin
        if idx.size and (idx.min() < -half or idx.max() >= half):
            raise DepthcliError(
                f"the point cloud spans more than {half} voxels of {self.voxel:g} from its first frame along an axis",
                "pass a larger --voxel-size",
            )
        u = (idx + half).astype(np.int64)
        return (u[:, 0] << (2 * self._BITS)) | (u[:, 1] << self._BITS) | u[:, 2]

    @staticmethod
    def _reduce(keys: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uniq, inv = np.unique(keys, return_inverse=True)
        inv = inv.reshape(-1)
        out = np.stack([np.bincount(inv, weights=sums[:, i], minlength=len(uniq)) for i in range(sums.shape[1])], axis=1)
        return uniq, out

    def add(self, xyz: np.ndarray, rgb: np.ndarray | None) -> None:
        if len(xyz) == 0:
            return
        keys = self._pack(np.floor(xyz / self.voxel).astype(np.int64))
        col = np.zeros((len(xyz), 3)) if rgb is None else np.asarray(rgb, np.float64)
        k, s = self._reduce(keys, np.column_stack([xyz, col, np.ones(len(xyz))]))
        self._pending.append((k, s))
        self._pending_n += len(k)
        if self._pending_n > 2_000_000:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._pending])
        sums = np.concatenate([self.sums] + [s for _, s in self._pending])
        self._pending, self._pending_n = [], 0
        self.keys, self.sums = self._reduce(keys, sums)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(xyz [N, 3] float64, rgb [N, 3] uint8)``: mean position and colour of each voxel."""
        self._flush()
        n = self.sums[:, 6:7]
        return self.sums[:, :3] / n, np.clip(np.round(self.sums[:, 3:6] / n), 0, 255).astype(np.uint8)


def _check_dataset(ds, to: str) -> None:
    if ds.depth_kind != "z" or ds.depth_units not in ("m", "sfm"):
        raise DepthcliError(
            f"dataset '{ds.root}' holds {ds.depth_kind} in '{ds.depth_units}' units; export needs z-depth in metres or SfM units",
            "relative predictions have no geometry to export",
        )
    if not ds.frames:
        raise DepthcliError(f"dataset '{ds.root}' has no frames")
    if to in ("nerfstudio", "colmap"):
        missing = [f.name for f in ds.frames if f.image is None]
        if missing:
            raise DepthcliError(
                f"{len(missing)} frame(s) of '{ds.root}' have no image (e.g. '{missing[0]}'); {to} needs images",
                "export depth-only data with --to ply",
            )


def auto_voxel_size(ds, samples: int = 8) -> float:
    """Four pixels' footprint at the median valid depth of a few evenly spaced frames."""
    from depthcli.depth import valid_mask

    idx = np.unique(np.linspace(0, len(ds.frames) - 1, min(samples, len(ds.frames))).round().astype(int))
    footprints = []
    for i in idx:
        f = ds.frames[int(i)]
        d = ds.read_depth(f)
        v = d[valid_mask(d)]
        if v.size:
            footprints.append(float(np.median(v)) / float(np.sqrt(f.K[0, 0] * f.K[1, 1])))
    if not footprints:
        raise DepthcliError(f"dataset '{ds.root}' has no valid depth to export")
    return 4.0 * float(np.median(footprints))


def build_point_cloud(ds, voxel_size: float, stride: int = 1, description: str = "point cloud") -> tuple[np.ndarray, np.ndarray, int]:
    """Back-project every frame's valid depth (world frame), voxel-downsample; returns ``(xyz, rgb, raw_points)``."""
    from depthcli.console import track
    from depthcli.depth import backproject_depth

    acc = VoxelAccumulator(voxel_size)
    raw = 0
    for f in track(ds.frames, description):
        depth = ds.read_depth(f)
        pts, pix = backproject_depth(depth, f.K, f.cam_from_world, stride=stride)
        img = ds.read_image(f)
        acc.add(pts, None if img is None else img[pix[:, 0], pix[:, 1]])
        raw += len(pts)
    xyz, rgb = acc.result()
    if not ds.has_images:
        rgb = np.full_like(rgb, 128)
    return xyz, rgb, raw


def _image_name(frame) -> str:
    return Path(frame.image).name


def _export_nerfstudio(ds, cfg: ExportConfig, folder: Path) -> dict[str, Any]:
    from depthcli.console import track
    from depthcli.depth import valid_mask
    from depthcli.io.depth_files import write_depth_png16
    from depthcli.io.nerfstudio import DEFAULT_DEPTH_UNIT_SCALE, intrinsics_json, transform_matrix_from_cam_from_world
    from depthcli.io.ply import write_points_ply

    scale = cfg.depth_scale
    if scale is None and ds.depth_units == "m":
        scale = 1.0 / DEFAULT_DEPTH_UNIT_SCALE  # millimetres
    if scale is None:  # SfM units: one scale for the whole project (nerfstudio has one factor)
        top = 0.0
        for f in ds.frames:
            d = ds.read_depth(f)
            v = d[valid_mask(d)]
            top = max(top, float(v.max()) if v.size else 0.0)
        scale = float(np.floor(65535.0 / top * 0.999)) if top > 0 else 1000.0
    if not scale > 0:
        raise DepthcliError("--depth-scale must be positive")

    (folder / "images").mkdir()
    (folder / "depth").mkdir()
    cams = {(f.width, f.height, tuple(np.asarray(f.K).ravel())) for f in ds.frames}
    shared = len(cams) == 1
    meta: dict[str, Any] = {"camera_model": "OPENCV"}
    if shared:
        f0 = ds.frames[0]
        meta.update(intrinsics_json(f0.K, f0.width, f0.height))
    meta["depth_unit_scale_factor"] = 1.0 / scale
    meta["ply_file_path"] = "sparse_pc.ply"
    meta["depthcli"] = {
        "source": str(Path(ds.root).absolute()),
        "depth_units": ds.depth_units,
        "depth_kind": "z",
        "depth_files": f"uint16 PNG, stored = round(z-depth x {scale:g}), 0 = invalid",
        "transform_matrix": "camera-to-world, OpenGL camera axes (x right, y up, z back); world frame of the dataset, unchanged",
        "pixel_centers": "(col + 0.5, row + 0.5) in depthcli and nerfstudio alike: cx, cy unchanged",
    }
    frames = []
    overflow = 0
    used: set[str] = set()
    for f in track(ds.frames, "nerfstudio frames"):
        name = _image_name(f)
        stem = Path(f.depth).stem
        if name in used:
            raise DepthcliError(f"two frames of '{ds.root}' share the image file name '{name}'")
        used.add(name)
        shutil.copyfile(Path(ds.root) / f.image, folder / "images" / name)
        overflow += write_depth_png16(folder / "depth" / f"{stem}.png", ds.read_depth(f), scale)
        fj: dict[str, Any] = {
            "file_path": f"images/{name}",
            "depth_file_path": f"depth/{stem}.png",
            "transform_matrix": transform_matrix_from_cam_from_world(f.cam_from_world).tolist(),
        }
        if not shared:
            fj.update(intrinsics_json(f.K, f.width, f.height))
        fj["depthcli_name"] = f.name
        frames.append(fj)
    meta["frames"] = frames
    voxel = cfg.voxel_size or auto_voxel_size(ds)
    xyz, rgb, raw = build_point_cloud(ds, voxel, cfg.stride, "sparse_pc.ply")
    write_points_ply(folder / "sparse_pc.ply", xyz, rgb, comments=[f"depthcli export: voxel {voxel:g} {ds.depth_units}"])
    (folder / "transforms.json").write_text(json.dumps(meta, indent=1))
    return {
        "frames": len(frames),
        "intrinsics": "shared" if shared else "per frame",
        "depth_scale": f"stored = depth x {scale:g} (depth_unit_scale_factor {1.0 / scale:g})",
        "depth_overflow_pixels": overflow,
        "points": len(xyz),
        "voxel_size": voxel,
        "backprojected_points": raw,
    }


def _export_colmap(ds, cfg: ExportConfig, folder: Path) -> dict[str, Any]:
    from depthcli.console import track
    from depthcli.depth import backproject_depth, valid_mask
    from depthcli.io.colmap_text import TextImage, write_text_model

    if cfg.points_per_frame < 0:
        raise DepthcliError("--points-per-frame must be 0 or more")
    (folder / "images").mkdir()
    cam_ids: dict[tuple, int] = {}
    cameras: list[tuple[int, int, np.ndarray]] = []
    images: list[TextImage] = []
    xyz_all, rgb_all, tracks = [], [], []
    n_points = 0
    used: set[str] = set()
    for j, f in enumerate(track(ds.frames, "colmap frames")):
        name = _image_name(f)
        if name in used:
            raise DepthcliError(f"two frames of '{ds.root}' share the image file name '{name}'")
        used.add(name)
        key = (f.width, f.height, tuple(np.asarray(f.K).ravel()))
        if key not in cam_ids:
            cameras.append((f.width, f.height, np.asarray(f.K)))
            cam_ids[key] = len(cameras)
        shutil.copyfile(Path(ds.root) / f.image, folder / "images" / name)
        depth = ds.read_depth(f)
        valid = np.flatnonzero(valid_mask(depth))
        rng = np.random.default_rng([cfg.seed, j])
        if len(valid) > cfg.points_per_frame:  # back-project only the sampled pixels
            keep = np.zeros(depth.size, dtype=bool)
            keep[rng.choice(valid, size=cfg.points_per_frame, replace=False)] = True
            depth = np.where(keep.reshape(depth.shape), depth, np.float32(0))
        pts, pix = backproject_depth(depth, f.K, f.cam_from_world)
        img = ds.read_image(f)
        ids = np.arange(n_points + 1, n_points + len(pts) + 1)
        images.append(TextImage(name, cam_ids[key], f.cam_from_world, pix[:, ::-1] + 0.5, ids))
        xyz_all.append(pts)
        rgb_all.append(img[pix[:, 0], pix[:, 1]])
        tracks.extend([(j + 1, k)] for k in range(len(pts)))
        n_points += len(pts)
    xyz = np.concatenate(xyz_all) if xyz_all else np.zeros((0, 3))
    rgb = np.concatenate(rgb_all) if rgb_all else np.zeros((0, 3), np.uint8)
    write_text_model(folder / "sparse" / "0", cameras, images, xyz, rgb, tracks)
    return {"frames": len(images), "cameras": len(cameras), "points": n_points, "camera_model": "PINHOLE",
            "depth_units": ds.depth_units}


def _export_ply(ds, cfg: ExportConfig, folder: Path) -> dict[str, Any]:
    from depthcli.io.ply import write_points_ply

    voxel = cfg.voxel_size or auto_voxel_size(ds)
    xyz, rgb, raw = build_point_cloud(ds, voxel, cfg.stride)
    if len(xyz) == 0:
        raise DepthcliError(f"dataset '{ds.root}' has no valid depth to export")
    comments = [f"depthcli export: voxel {voxel:g} {ds.depth_units}, world frame of {Path(ds.root).name}"]
    if not ds.has_images:
        comments.append("depthcli colors none")
    write_points_ply(folder / "points.ply", xyz, rgb, comments=comments)
    return {"frames": len(ds.frames), "points": len(xyz), "backprojected_points": raw, "voxel_size": voxel,
            "units": ds.depth_units}


def export_dataset(cfg: ExportConfig) -> dict[str, Any]:
    """Export ``cfg.dataset`` as ``cfg.to`` into ``cfg.out`` (atomic); returns a summary dict."""
    from depthcli.io.atomic import atomic_output_dir
    from depthcli.io.dataset import load_dataset

    cfg.validate()
    ds = load_dataset(Path(cfg.dataset))
    _check_dataset(ds, cfg.to)
    with atomic_output_dir(Path(cfg.out), cfg.overwrite, what="export", inputs=[cfg.dataset]) as tmp:
        run = {"nerfstudio": _export_nerfstudio, "colmap": _export_colmap, "ply": _export_ply}[cfg.to]
        summary = run(ds, cfg, tmp)
    return {"dataset": str(cfg.dataset), "format": cfg.to, "out": str(cfg.out), **summary}
