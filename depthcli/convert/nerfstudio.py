"""nerfstudio projects with depth -> depth datasets (plan frames, decode, write).

Reads ``transforms.json`` through :mod:`depthcli.io.nerfstudio` (format facts
there): camera-to-world in OpenGL axes becomes ``cam_from_world`` in OpenCV
axes, ``fl_x fl_y cx cy`` become K unchanged (same pixel-centre convention),
stored depth x ``depth_unit_scale_factor`` becomes z-depth in metres (SfM units
for projects depthcli exported from SfM data). Distorted projects are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from depthcli.convert.config import ConvertConfig
from depthcli.errors import DepthcliError

KINDS = ("nerfstudio",)


def detect(source: Path) -> tuple[str, str] | None:
    """``("nerfstudio", reason)`` for a folder holding ``transforms.json``, else None."""
    from depthcli.io.nerfstudio import detect as detect_project

    reason = detect_project(Path(source))
    return None if reason is None else ("nerfstudio", reason)


def convert_source(cfg: ConvertConfig, folder: Path, kind: str = "nerfstudio") -> dict[str, Any]:
    """Write the dataset of a nerfstudio project into ``folder``; returns the summary."""
    from depthcli.convert.common import PlannedFrame, write_frames
    from depthcli.io.nerfstudio import read_depth, read_transforms

    proj = read_transforms(Path(cfg.source))
    if any(f.depth is None for f in proj.frames):
        raise DepthcliError(
            f"the nerfstudio project '{proj.root}' has no depth (no depth_file_path in its frames)",
            "depthcli datasets need depth; add depth_file_path to every frame",
        )
    factor = proj.depth_unit_scale_factor
    if cfg.input_depth_scale is not None:
        factor = 1.0 / float(cfg.input_depth_scale)
    source = {
        "kind": "nerfstudio",
        "path": str(Path(cfg.source).absolute()),
        "depth_unit_scale_factor": factor,
        "conversion": "transform_matrix (camera-to-world, OpenGL axes) -> cam_from_world (OpenCV axes); "
        "K from fl_x fl_y cx cy unchanged (pixel centres at +0.5 in both); depth = stored x depth_unit_scale_factor (z)",
        "camera_model": proj.camera_model,
    }
    for key in ("applied_transform", "applied_scale"):
        if key in proj.meta:
            source[key] = proj.meta[key]
    planned = [
        PlannedFrame(
            name=f.name,
            load_depth=(lambda f=f: read_depth(f, factor)),
            K=f.K,
            cam_from_world=f.cam_from_world,
            image=f.image,
        )
        for f in proj.frames
    ]
    return write_frames(cfg, folder, planned, label="nerfstudio", depth_units=proj.depth_units, source=source)
