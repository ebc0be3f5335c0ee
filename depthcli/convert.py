"""``convert``: any supported source -> one depth dataset.

:func:`convert` detects the source layout (or takes ``--from``), builds the
dataset in a temporary folder and renames it into place when complete. The
readers live in :mod:`depthcli.io.colmap` (COLMAP models) and
:mod:`depthcli.io.rgbd` (TUM, 7-Scenes, generic folders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from depthcli.errors import DepthcliError

SOURCE_KINDS = ("auto", "colmap", "tum", "7scenes", "nyu", "kitti", "folder")


@dataclass
class ConvertConfig:
    """Options shared by every source (CLI flags map onto these fields)."""

    source: Path  #: what to convert
    out: Path  #: the dataset folder to create
    source_kind: str = "auto"  #: one of SOURCE_KINDS
    overwrite: bool = False  #: replace an existing ``out``
    depth_format: Literal["npy", "png16"] = "npy"  #: how depth files are stored
    depth_scale: float | None = None  #: png16 scale (stored = depth * scale); default 1000 for metres
    previews: bool = False  #: write colourised depth previews
    max_depth: float | None = None  #: depth beyond this (dataset units) becomes invalid
    downscale: int = 1  #: integer factor to shrink images and depth by
    max_frames: int | None = None  #: keep only the first N frames (after sorting)
    # COLMAP
    images: Path | None = None  #: image folder when SOURCE is the model folder itself
    max_reproj_error: float | None = None  #: drop SfM points with a larger mean reprojection error (px)
    min_track_length: int = 0  #: drop SfM points seen by fewer images
    dense: bool = False  #: use COLMAP MVS depth maps (stereo/depth_maps) instead of sparse points
    # RGB-D
    input_depth_scale: float | None = None  #: raw depth value / this = metres (generic folder)
    intrinsics: tuple[float, float, float, float] | None = None  #: fx fy cx cy for folder sources
    intrinsics_file: Path | None = None  #: 3x3 K text file (7-Scenes / folder)
    depth_encoding: str = "linear"  #: raw depth encoding: linear | nyu-raw | sun (see depthcli.io.rgbd)
    resize_depth: bool = False  #: resize depth to the colour image size (nearest) instead of refusing
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Refuse out-of-range settings (one line each) before anything is read or written."""
        from depthcli.validate import check_choice, check_float, check_int, check_positive

        check_choice(self.source_kind, "source kind (--from)", SOURCE_KINDS)
        check_choice(self.depth_format, "depth format (--depth-format)", ("npy", "png16"))
        check_choice(self.depth_encoding, "depth encoding (--depth-encoding)", ("linear", "nyu-raw", "sun"))
        check_positive(self.depth_scale, "--depth-scale", optional=True)
        check_positive(self.input_depth_scale, "--input-depth-scale", optional=True)
        check_int(self.downscale, "--downscale", min=1, max=64)
        check_positive(self.max_depth, "--max-depth", optional=True)
        check_int(self.max_frames, "--max-frames", min=1, optional=True, hint="leave it out to keep every frame")
        check_positive(self.max_reproj_error, "--max-reproj-error", optional=True)
        check_int(self.min_track_length, "--min-track-length", min=0)
        if self.intrinsics is not None:
            if len(self.intrinsics) != 4:
                raise DepthcliError("--intrinsics takes four numbers: FX FY CX CY (pixels)")
            for name, v in zip(("FX", "FY"), self.intrinsics[:2]):
                check_positive(v, f"--intrinsics {name}")
            for name, v in zip(("CX", "CY"), self.intrinsics[2:]):
                check_float(v, f"--intrinsics {name}")


def detect_source(source: Path) -> tuple[str, str]:
    """Return (kind, reason) for a source folder, or raise a clear error."""
    from depthcli.io import colmap, rgbd

    source = Path(source)
    if not source.exists():
        raise DepthcliError(f"source '{source}' does not exist")
    if not source.is_dir():
        raise DepthcliError(f"source '{source}' is not a folder", "pass a COLMAP project or an RGB-D capture folder")
    if not any(source.iterdir()):
        raise DepthcliError(f"source '{source}' is empty")
    found = colmap.detect(source)
    if found is not None:
        return "colmap", found
    found_kind = rgbd.detect(source)
    if found_kind is not None:
        return found_kind
    raise DepthcliError(
        f"cannot tell what '{source}' holds: no COLMAP model (sparse/0, cameras.bin|txt), "
        "TUM lists (rgb.txt, depth.txt), 7-Scenes frames (frame-*.depth.png) or color/ + depth/ folders",
        "pass --from colmap|tum|7scenes|nyu|kitti|folder",
    )


def convert(cfg: ConvertConfig) -> dict[str, Any]:
    """Convert ``cfg.source`` into a dataset at ``cfg.out``; returns a summary dict."""
    from depthcli.console import log
    from depthcli.io.atomic import atomic_output_dir, check_output_dir

    cfg.validate()
    check_output_dir(cfg.out, cfg.overwrite, inputs=[cfg.source, cfg.images, cfg.intrinsics_file])
    if cfg.source_kind == "auto":
        kind, reason = detect_source(cfg.source)
        log(f"detected [bold]{kind}[/bold] source: {reason}")
    else:
        kind = cfg.source_kind
        if not Path(cfg.source).exists():
            raise DepthcliError(f"source '{cfg.source}' does not exist")
    if Path(cfg.out).absolute().resolve() == Path(cfg.source).absolute().resolve():
        raise DepthcliError("output folder is the source folder", "inputs are never modified: choose another output")
    with atomic_output_dir(cfg.out, cfg.overwrite) as tmp:
        if kind == "colmap":
            from depthcli.io.colmap import convert_colmap

            summary = convert_colmap(cfg, tmp)
        else:
            from depthcli.io.rgbd import convert_rgbd

            summary = convert_rgbd(cfg, tmp, kind)
    return {"source": str(cfg.source), "detected": kind, "out": str(cfg.out), **summary}
