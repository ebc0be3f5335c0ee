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
    """Write the dataset of a nerfstudio project into ``folder``; returns the writer's summary."""
    import cv2

    from depthcli.console import track
    from depthcli.depth import apply_far_cutoff, downscale_depth_valid
    from depthcli.geometry import scale_K
    from depthcli.io.dataset import DatasetWriter
    from depthcli.io.images import read_image_rgb
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
    frames = proj.frames if cfg.max_frames is None else proj.frames[: max(0, int(cfg.max_frames))]
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
    writer = DatasetWriter(
        folder,
        depth_units=proj.depth_units,  # type: ignore[arg-type]
        source=source,
        depth_format=cfg.depth_format,
        depth_scale=cfg.depth_scale,
        previews=cfg.previews,
    )
    n = int(cfg.downscale)
    for f in track(frames, "nerfstudio frames"):
        img = read_image_rgb(f.image)
        if img.shape[:2] != (f.height, f.width):
            raise DepthcliError(
                f"image '{f.image}' is {img.shape[1]}x{img.shape[0]}, transforms.json says {f.width}x{f.height}"
            )
        depth = apply_far_cutoff(read_depth(f, factor), cfg.max_depth)
        K = f.K
        image: Any = f.image
        if n > 1:
            w, h = f.width // n, f.height // n
            if w < 1 or h < 1:
                raise DepthcliError(f"--downscale {n} leaves nothing of the {f.width}x{f.height} frame '{f.name}'")
            K = scale_K(K, w / f.width, h / f.height)
            image = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            depth = downscale_depth_valid(depth, n)[:h, :w]
        writer.add_frame(f.name, depth, K, f.cam_from_world, image=image)
    return writer.close()
