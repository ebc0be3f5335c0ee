"""BlendedMVS scene -> depth dataset (cameras: :mod:`depthcli.io.mvsnet`).

SOURCE is one scene folder (``5a3ca9cb270f0e3f14d0eddb``)::

    blended_images/NNNNNNNN.jpg         (also NNNNNNNN_masked.jpg, ignored)
    rendered_depth_maps/NNNNNNNN.pfm    z-depth in the reconstruction's units, 0 = invalid
    cams/NNNNNNNN_cam.txt               MVSNet camera: extrinsic = cam_from_world, intrinsic K

The reconstructions have no metric scale: ``depth_units`` is "sfm". K is stored
as given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from depthcli.convert.common import PlannedFrame, write_frames
from depthcli.convert.config import ConvertConfig
from depthcli.errors import DepthcliError
from depthcli.io import mvsnet

KINDS = ("blendedmvs",)


def detect(source: Path) -> tuple[str, str] | None:
    source = Path(source)
    depth = source / "rendered_depth_maps"
    if depth.is_dir() and (source / "cams").is_dir() and any(depth.glob("*.pfm")):
        return "blendedmvs", "BlendedMVS scene (rendered_depth_maps/*.pfm + cams/)"
    return None


def _load(path: Path):
    from depthcli.io.depth_files import read_pfm

    if not path.is_file():
        raise DepthcliError(f"depth file '{path}' does not exist")
    d = read_pfm(path)
    if d.ndim != 2:
        raise DepthcliError(f"'{path}' has 3 channels, a depth map has 1")
    return d


def convert_source(cfg: ConvertConfig, folder: Path, kind: str = "blendedmvs") -> dict[str, Any]:
    src = Path(cfg.source)
    depths = sorted((src / "rendered_depth_maps").glob("*.pfm"))
    if not depths:
        raise DepthcliError(f"'{src}' is not a BlendedMVS scene (no rendered_depth_maps/*.pfm)")
    frames = []
    for path in depths:
        stem = path.stem
        cam_from_world, K, _ = mvsnet.read_cam_txt(src / "cams" / f"{stem}_cam.txt")
        image = src / "blended_images" / f"{stem}.jpg"
        frames.append(PlannedFrame(name=stem, load_depth=lambda path=path: _load(path), K=K,
                                   cam_from_world=cam_from_world, image=image if image.is_file() else None))
    source = {"kind": "blendedmvs", "path": str(src.absolute()),
              "depth_conversion": "PFM z-depth in reconstruction units, as stored", "units": "no metric scale (sfm)"}
    summary = write_frames(cfg, folder, frames, label="blendedmvs", depth_units="sfm", source=source)
    summary["depth_conversion"] = "PFM z-depth as stored (reconstruction units, no metric scale)"
    return summary
