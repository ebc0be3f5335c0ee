"""The depth dataset: the on-disk contract between depthcli commands.

A dataset is a folder::

    OUT/
      dataset.json        # metadata + one entry per frame (see docs/dataset.md)
      images/NAME.png     # RGB image (absent for depth-only data)
      depth/NAME.npy      # float32 depth, or depth/NAME.png (uint16, per-frame depth_scale)
      previews/NAME.png   # optional colourised depth

Every command reads and writes datasets through this module only.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from depthcli import __version__
from depthcli.depth import sanitize_depth, valid_mask
from depthcli.errors import DepthcliError
from depthcli.validate import MAX_SIDE, check_int, check_intrinsics_matrix, check_positive, check_rigid

FORMAT = "depthcli.dataset"
VERSION = 1
DepthUnits = Literal["m", "sfm", "affine"]
DepthKind = Literal["z", "disparity"]
DEPTH_UNITS = ("m", "sfm", "affine")
DEPTH_KINDS = ("z", "disparity")
DEPTH_FORMATS = ("npy", "png16")

CONVENTIONS = {
    "camera_model": "PINHOLE (K of the stored, undistorted image)",
    "pixel_centers": "pixel (row, col) has centre (col + 0.5, row + 0.5), as COLMAP (OpenCV: integer centres, cx = cx_opencv + 0.5)",
    "camera_axes": "OpenCV: x right, y down, z forward",
    "pose": "cam_from_world maps world points to camera points: X_cam = R X_world + t",
    "invalid_value": 0,
}


@dataclass
class Frame:
    """One view: image, depth map, intrinsics and pose."""

    name: str
    depth: str  #: relative path of the depth file
    width: int
    height: int
    K: np.ndarray  #: [3, 3] pinhole intrinsics of the stored image (pixels)
    cam_from_world: np.ndarray  #: [4, 4] world -> camera (OpenCV axes)
    image: str | None = None  #: relative path of the RGB image, None for depth-only data
    depth_scale: float | None = None  #: stored integer = depth * depth_scale (png16 only)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "depth": self.depth,
            "width": int(self.width),
            "height": int(self.height),
            "K": np.asarray(self.K, dtype=float).tolist(),
            "cam_from_world": np.asarray(self.cam_from_world, dtype=float).tolist(),
        }
        if self.depth_scale is not None:
            d["depth_scale"] = float(self.depth_scale)
        d.update(self.extra)
        return d

    @property
    def world_from_cam(self) -> np.ndarray:
        from depthcli.geometry import invert_rigid

        return invert_rigid(self.cam_from_world)


@dataclass
class DepthDataset:
    """A loaded dataset (metadata in memory; images and depth read on demand)."""

    root: Path
    depth_units: str
    depth_kind: str
    source: dict[str, Any]
    frames: list[Frame]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path) -> "DepthDataset":
        return load_dataset(root)

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, name: str) -> Frame:
        for f in self.frames:
            if f.name == name:
                return f
        raise DepthcliError(f"no frame named '{name}' in dataset '{self.root}'")

    def path_of(self, relpath: str, what: str) -> Path:
        """The file ``relpath`` (from dataset.json) names, refused if it leaves the dataset."""
        from depthcli.io.paths import resolve_inside

        return resolve_inside(self.root, relpath, f"{self.root / 'dataset.json'}: {what}")

    def read_depth(self, frame: Frame, nonfinite: Literal["error", "invalid"] = "error") -> np.ndarray:
        """``[H, W]`` float32 in ``depth_units``; 0 = invalid.

        NaN/Inf never occur in a dataset written by depthcli, so by default they
        are reported as an error; ``nonfinite="invalid"`` turns them into 0.
        """
        from depthcli.io.depth_files import read_depth_file

        path = self.path_of(frame.depth, f"frame '{frame.name}' depth")
        scale = frame.depth_scale
        if path.suffix.lower() == ".png" and scale is None:
            raise DepthcliError(f"frame '{frame.name}' has a 16-bit depth file but no depth_scale in dataset.json")
        depth = read_depth_file(path, scale)
        if depth.shape != (frame.height, frame.width):
            raise DepthcliError(
                f"depth of frame '{frame.name}' is {depth.shape[1]}x{depth.shape[0]}, "
                f"but dataset.json says {frame.width}x{frame.height}",
                "re-create the dataset with depthcli convert",
            )
        bad = ~np.isfinite(depth)
        if bad.any():
            if nonfinite == "error":
                raise DepthcliError(
                    f"depth of frame '{frame.name}' has {int(bad.sum())} NaN/Inf values",
                    "invalid depth must be stored as 0; re-create the dataset with depthcli convert",
                )
            depth = sanitize_depth(depth)
        depth[depth < 0] = 0
        return depth

    def read_image(self, frame: Frame) -> np.ndarray | None:
        """``[H, W, 3]`` uint8 RGB, or None for a depth-only frame."""
        from depthcli.io.images import read_image_rgb

        if frame.image is None:
            return None
        img = read_image_rgb(self.path_of(frame.image, f"frame '{frame.name}' image"))
        if img.shape[:2] != (frame.height, frame.width):
            raise DepthcliError(
                f"image of frame '{frame.name}' is {img.shape[1]}x{img.shape[0]}, "
                f"but its depth is {frame.width}x{frame.height}",
                "image and depth of a frame must have the same size",
            )
        return img

    @property
    def has_images(self) -> bool:
        return any(f.image is not None for f in self.frames)


def _matrix(value: Any, shape: tuple[int, int], what: str, where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != shape or not np.isfinite(m).all():
        raise DepthcliError(f"{where}: '{what}' must be a finite {shape[0]}x{shape[1]} matrix")
    return m


def load_dataset(root: Path) -> DepthDataset:
    """Read and validate ``root/dataset.json``."""
    root = Path(root)
    meta_path = root / "dataset.json"
    if not root.exists():
        raise DepthcliError(f"dataset '{root}' does not exist")
    if not meta_path.is_file():
        raise DepthcliError(f"'{root}' is not a depth dataset (no dataset.json)", "create one with depthcli convert or depthcli synth")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DepthcliError(f"'{meta_path}' is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DepthcliError(f"'{meta_path}' is not a depthcli dataset (format is not '{FORMAT}')")
    if int(meta.get("version", 0)) > VERSION:
        raise DepthcliError(
            f"dataset '{root}' has format version {meta.get('version')}, this depthcli reads up to {VERSION}",
            "upgrade depthcli",
        )
    units = meta.get("depth_units")
    kind = meta.get("depth_kind")
    if units not in DEPTH_UNITS:
        raise DepthcliError(f"'{meta_path}': depth_units must be one of {DEPTH_UNITS}, got {units!r}")
    if kind not in DEPTH_KINDS:
        raise DepthcliError(f"'{meta_path}': depth_kind must be one of {DEPTH_KINDS}, got {kind!r}")
    frames_json = meta.get("frames")
    if not isinstance(frames_json, list):
        raise DepthcliError(f"'{meta_path}' has no 'frames' list")
    frames = []
    known = {"name", "image", "depth", "width", "height", "K", "cam_from_world", "depth_scale"}
    from depthcli.io.paths import resolve_inside
    for i, fj in enumerate(frames_json):
        where = f"{meta_path} frame {i}"
        if not isinstance(fj, dict) or not {"name", "depth", "width", "height", "K", "cam_from_world"} <= set(fj):
            raise DepthcliError(f"{where}: needs name, depth, width, height, K and cam_from_world")
        # Paths in metadata must stay inside the dataset (no '..', absolute paths or links out).
        resolve_inside(root, fj["depth"], f"{where} depth")
        if fj.get("image") is not None:
            resolve_inside(root, fj["image"], f"{where} image")
        frames.append(
            Frame(
                name=str(fj["name"]),
                image=fj.get("image"),
                depth=str(fj["depth"]),
                width=check_int(fj["width"], f"{where}: width", min=1, max=MAX_SIDE),
                height=check_int(fj["height"], f"{where}: height", min=1, max=MAX_SIDE),
                K=_matrix(fj["K"], (3, 3), "K", where),
                cam_from_world=_matrix(fj["cam_from_world"], (4, 4), "cam_from_world", where),
                depth_scale=check_positive(fj.get("depth_scale"), f"{where}: depth_scale", optional=True),
                extra={k: v for k, v in fj.items() if k not in known},
            )
        )
        check_intrinsics_matrix(frames[-1].K, where)
        check_rigid(frames[-1].cam_from_world, where)
    rest = {k: v for k, v in meta.items() if k not in {"frames"}}
    return DepthDataset(
        root=root,
        depth_units=units,
        depth_kind=kind,
        source=meta.get("source") or {},
        frames=frames,
        meta=rest,
    )


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(name: str) -> str:
    """A file-name stem for a frame name (``a/b c.jpg`` -> ``a_b_c``)."""
    stem = name.rsplit(".", 1)[0] if "." in Path(name).name else name
    stem = _SAFE.sub("_", stem).strip("._")
    return stem or "frame"


class DatasetWriter:
    """Write a dataset into ``folder`` (typically the temporary folder of
    :func:`depthcli.io.atomic.atomic_output_dir`).

    ``add_frame`` writes the image, depth (and preview) at once; ``close`` writes
    ``dataset.json`` last, so a folder with a ``dataset.json`` is complete.
    """

    def __init__(
        self,
        folder: Path,
        *,
        depth_units: DepthUnits,
        source: dict[str, Any],
        depth_kind: DepthKind = "z",
        depth_format: Literal["npy", "png16"] = "npy",
        depth_scale: float | None = None,
        previews: bool = False,
        image_format: Literal["png", "jpg"] = "png",
        meta: dict[str, Any] | None = None,
    ):
        if depth_units not in DEPTH_UNITS:
            raise ValueError(f"depth_units must be one of {DEPTH_UNITS}")
        if depth_kind not in DEPTH_KINDS:
            raise ValueError(f"depth_kind must be one of {DEPTH_KINDS}")
        if depth_format not in DEPTH_FORMATS:
            raise DepthcliError(f"unknown depth format '{depth_format}'", f"use one of {', '.join(DEPTH_FORMATS)}")
        self.folder = Path(folder)
        self.depth_units = depth_units
        self.depth_kind = depth_kind
        self.source = source
        self.depth_format = depth_format
        self.depth_scale = depth_scale
        self.previews = previews
        self.image_format = image_format
        self.meta = dict(meta or {})
        self.frames: list[Frame] = []
        self._names: set[str] = set()
        self._ranges: list[tuple[float, float]] = []
        self._valid = 0
        self._pixels = 0
        self.overflow = 0
        # Previews share one colour scale, known only once every frame is in: keep a
        # small sample of each frame's values now, draw previews from the files at close.
        self._preview_samples: list[np.ndarray] = []
        (self.folder / "depth").mkdir(parents=True, exist_ok=True)

    def _unique_stem(self, name: str) -> str:
        stem = safe_stem(name)
        cand, i = stem, 1
        while cand in self._names:
            cand = f"{stem}_{i}"
            i += 1
        self._names.add(cand)
        return cand

    def _png16_scale(self, depth: np.ndarray) -> float:
        if self.depth_scale is not None:
            return float(self.depth_scale)
        if self.depth_units == "m":
            return 1000.0  # millimetres, as most RGB-D tools store depth
        # Other units: the largest scale that keeps this frame's depth in range.
        v = depth[valid_mask(depth)]
        top = float(v.max()) if v.size else 1.0
        return float(np.floor(65535.0 / top * 0.999))

    def add_frame(
        self,
        name: str,
        depth: np.ndarray,
        K: np.ndarray,
        cam_from_world: np.ndarray,
        image: np.ndarray | Path | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Frame:
        """Store one frame. ``image`` is an RGB uint8 array, a path to copy as is, or None."""
        from depthcli.io.depth_files import write_depth_npy, write_depth_png16
        from depthcli.io.images import write_image_rgb

        depth = sanitize_depth(depth)
        h, w = depth.shape
        stem = self._unique_stem(name)
        image_rel = None
        if image is not None:
            if isinstance(image, (str, Path)):
                src = Path(image)
                image_rel = f"images/{stem}{src.suffix.lower()}"
                (self.folder / "images").mkdir(exist_ok=True)
                shutil.copyfile(src, self.folder / image_rel)
            else:
                img = np.asarray(image)
                if img.shape[:2] != (h, w):
                    raise DepthcliError(
                        f"frame '{name}': image is {img.shape[1]}x{img.shape[0]} but depth is {w}x{h}",
                        "image and depth of a frame must have the same size",
                    )
                image_rel = f"images/{stem}.{self.image_format}"
                (self.folder / "images").mkdir(exist_ok=True)
                write_image_rgb(self.folder / image_rel, img)
        scale = None
        if self.depth_format == "npy":
            depth_rel = f"depth/{stem}.npy"
            write_depth_npy(self.folder / depth_rel, depth)
        else:
            depth_rel = f"depth/{stem}.png"
            scale = self._png16_scale(depth)
            self.overflow += write_depth_png16(self.folder / depth_rel, depth, scale)
        valid = valid_mask(depth)
        self._valid += int(valid.sum())
        self._pixels += depth.size
        if valid.any():
            self._ranges.append((float(depth[valid].min()), float(depth[valid].max())))
        if self.previews:
            self._preview_samples.append(depth[valid][:: max(1, depth.size // 20000)])
        frame = Frame(
            name=name,
            image=image_rel,
            depth=depth_rel,
            width=w,
            height=h,
            K=np.asarray(K, dtype=np.float64),
            cam_from_world=np.asarray(cam_from_world, dtype=np.float64),
            depth_scale=scale,
            extra=dict(extra or {}),
        )
        self.frames.append(frame)
        return frame

    @property
    def depth_range(self) -> tuple[float, float] | None:
        if not self._ranges:
            return None
        return min(r[0] for r in self._ranges), max(r[1] for r in self._ranges)

    def _write_previews(self) -> tuple[float, float] | None:
        import cv2

        from depthcli.io.depth_files import read_depth_file
        from depthcli.io.images import write_image_rgb
        from depthcli.io.previews import colorize_depth, colorize_values

        allv = np.concatenate(self._preview_samples or [np.zeros(0, np.float32)])
        if allv.size == 0:
            return None
        # One colour scale for the whole dataset: 1st-99th percentile of valid depth.
        lo, hi = float(np.percentile(allv, 1)), float(np.percentile(allv, 99))
        (self.folder / "previews").mkdir(exist_ok=True)
        for frame in self.frames:
            d = read_depth_file(self.folder / frame.depth, frame.depth_scale)
            valid = valid_mask(d)
            rgb = colorize_values(d, valid, lo, hi) if self.depth_kind == "disparity" else colorize_depth(d, lo, hi)
            if valid.mean() < 0.05:  # sparse depth: grow points so they are visible
                rgb = cv2.dilate(rgb, np.ones((3, 3), np.uint8))
            write_image_rgb(self.folder / "previews" / f"{Path(frame.depth).stem}.png", rgb)
        return lo, hi

    def close(self) -> dict[str, Any]:
        """Write previews and ``dataset.json``; return a summary dict."""
        preview_range = self._write_previews() if self.previews else None
        meta: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "depth_units": self.depth_units,
            "depth_kind": self.depth_kind,
            "invalid_value": 0,
            "conventions": CONVENTIONS,
            "source": self.source,
            "created_by": f"depthcli {__version__}",
        }
        if preview_range is not None:
            meta["preview_range"] = {"lo": preview_range[0], "hi": preview_range[1], "colormap": "magma, near bright"}
        meta.update(self.meta)
        meta["frames"] = [f.to_json() for f in self.frames]
        (self.folder / "dataset.json").write_text(json.dumps(meta, indent=1))
        summary: dict[str, Any] = {
            "frames": len(self.frames),
            "depth_units": self.depth_units,
            "depth_kind": self.depth_kind,
            "valid_depth_fraction": (self._valid / self._pixels) if self._pixels else 0.0,
        }
        rng = self.depth_range
        if rng is not None:
            summary["depth_range"] = f"{rng[0]:.4g} .. {rng[1]:.4g} {self.depth_units}"
        if preview_range is not None:
            summary["preview_range"] = f"{preview_range[0]:.4g} .. {preview_range[1]:.4g} {self.depth_units}"
        if self.overflow:
            summary["png16_overflow_pixels"] = self.overflow
        return summary
