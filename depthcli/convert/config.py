"""The options of ``convert``, shared by every source family (CLI flags map onto these fields)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass
class ConvertConfig:
    """Options shared by every source (CLI flags map onto these fields)."""

    source: Path  #: what to convert
    out: Path  #: the dataset folder to create
    source_kind: str = "auto"  #: "auto" or a kind of :data:`depthcli.convert.SOURCE_FAMILIES`
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
    # training sets (Hypersim, ...)
    camera_parameters: Path | None = None  #: Hypersim metadata_camera_parameters.csv (default: found beside or above SOURCE)
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Refuse out-of-range settings (one line each) before anything is read or written.

        The source kind is checked by :func:`depthcli.convert.convert`, which owns the table of kinds.
        """
        from depthcli.errors import DepthcliError
        from depthcli.validate import check_choice, check_float, check_int, check_positive

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
