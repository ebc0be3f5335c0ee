"""``depthcli convert``: a COLMAP project or an RGB-D capture -> a depth dataset.

Thin: flags -> :class:`depthcli.convert.ConvertConfig` -> :func:`depthcli.convert.convert`
-> summary. Only typer and the standard library are imported at module level.
"""

from pathlib import Path
from typing import Optional, Tuple

import typer

HELP = (
    "Convert a COLMAP project, an RGB-D capture (TUM, 7-Scenes, NYU, KITTI, ScanNet-style, color/ + depth/ "
    "folders), a nerfstudio project or a synthetic training set (Hypersim, Virtual KITTI 2, TartanAir, IRS, "
    "BlendedMVS) into a depth dataset (z-depth, 0 = invalid; metres, or SfM units for COLMAP)."
)


def command(
    source: Path = typer.Argument(..., help="COLMAP project / model folder, or RGB-D capture folder."),
    out: Path = typer.Argument(..., help="Dataset folder to create."),
    from_: str = typer.Option(
        "auto", "--from", help="Source layout: auto, colmap, nerfstudio, hypersim, vkitti2, tartanair, irs, blendedmvs, scannet, tum, 7scenes, nyu, kitti or folder."
    ),
    images: Optional[Path] = typer.Option(None, "--images", help="COLMAP: image folder when SOURCE is the model folder."),
    max_depth: Optional[float] = typer.Option(None, "--max-depth", help="Depth beyond this (dataset units) becomes invalid (0)."),
    downscale: int = typer.Option(1, "--downscale", help="Shrink images (area) and depth (valid-aware subsampling) by this integer factor."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Keep only the first N frames (sorted)."),
    depth_format: str = typer.Option("npy", "--depth-format", help="Stored depth: npy (float32) or png16 (uint16 = depth * --depth-scale)."),
    depth_scale: Optional[float] = typer.Option(
        None, "--depth-scale", help="png16 output: stored = depth * scale (default 1000 for metres, i.e. millimetres)."
    ),
    previews: bool = typer.Option(False, "--previews", help="Write colourised depth previews."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    max_reproj_error: Optional[float] = typer.Option(
        None, "--max-reproj-error", help="COLMAP: drop points with a larger mean reprojection error (px)."
    ),
    min_track_length: int = typer.Option(0, "--min-track-length", help="COLMAP: drop points seen by fewer images."),
    dense: bool = typer.Option(False, "--dense", help="COLMAP: use MVS depth maps (stereo/depth_maps) instead of sparse points."),
    input_depth_scale: Optional[float] = typer.Option(
        None,
        "--input-depth-scale",
        help="RGB-D: raw depth value / scale = metres (folder sources; overrides TUM 5000, 7-Scenes/NYU 1000, KITTI 256).",
    ),
    depth_encoding: str = typer.Option(
        "linear", "--depth-encoding", help="RGB-D raw depth encoding: linear, nyu-raw (Kinect disparity) or sun (bit-rotated mm)."
    ),
    intrinsics: Optional[Tuple[float, float, float, float]] = typer.Option(
        None, "--intrinsics", help="RGB-D: colour camera FX FY CX CY (pixels; pixel centres at +0.5: an OpenCV cx, cy + 0.5)."
    ),
    intrinsics_file: Optional[Path] = typer.Option(
        None, "--intrinsics-file", help="RGB-D: text file with a 3x3 K (or 'fx fy cx cy')."
    ),
    resize_depth: bool = typer.Option(
        False, "--resize-depth", help="RGB-D: resize depth to the colour size (nearest) instead of refusing a size mismatch."
    ),
    camera_parameters: Optional[Path] = typer.Option(
        None, "--camera-parameters", help="Hypersim: metadata_camera_parameters.csv (default: found beside or above SOURCE)."
    ),
    json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Convert a COLMAP project or an RGB-D capture into a depth dataset."""
    from depthcli.console import report
    from depthcli.convert import ConvertConfig, convert

    cfg = ConvertConfig(
        source=source,
        out=out,
        source_kind=from_,
        overwrite=overwrite,
        depth_format=depth_format,  # type: ignore[arg-type]
        depth_scale=depth_scale,
        previews=previews,
        max_depth=max_depth,
        downscale=downscale,
        max_frames=max_frames,
        images=images,
        max_reproj_error=max_reproj_error,
        min_track_length=min_track_length,
        dense=dense,
        input_depth_scale=input_depth_scale,
        intrinsics=tuple(intrinsics) if intrinsics is not None else None,  # type: ignore[arg-type]
        intrinsics_file=intrinsics_file,
        depth_encoding=depth_encoding,
        resize_depth=resize_depth,
        camera_parameters=camera_parameters,
    )
    summary = convert(cfg)
    report(summary, title=f"converted {summary.get('detected', from_)} -> {out}", as_json=json)
