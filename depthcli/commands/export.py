"""``depthcli export``: a depth dataset -> a nerfstudio project, a COLMAP model or a PLY point cloud.

Thin: flags -> :class:`depthcli.export.ExportConfig` -> :func:`depthcli.export.export_dataset`
-> summary. Only typer and the standard library are imported at module level.
"""

from pathlib import Path
from typing import Optional

import typer

HELP = (
    "Export a depth dataset as a nerfstudio project (transforms.json + 16-bit mm depth), "
    "a COLMAP text model with images (gsplat, Inria 3DGS) or a coloured point-cloud PLY."
)


def command(
    dataset: Path = typer.Argument(..., help="Depth dataset folder (dataset.json)."),
    out: Path = typer.Argument(..., help="Folder to create."),
    to: str = typer.Option(..., "--to", help="Output format: nerfstudio, colmap or ply."),
    voxel_size: Optional[float] = typer.Option(
        None, "--voxel-size", help="Point cloud voxel edge, dataset units (default: 4 pixels at the median depth)."
    ),
    stride: int = typer.Option(1, "--stride", help="Point cloud: back-project every N-th pixel (rows and columns)."),
    points_per_frame: int = typer.Option(2000, "--points-per-frame", help="COLMAP: 3D points sampled from each frame's depth."),
    depth_scale: Optional[float] = typer.Option(
        None, "--depth-scale", help="nerfstudio: stored = depth x scale (default 1000 for metres: millimetres)."
    ),
    seed: int = typer.Option(0, "--seed", help="COLMAP: seed of the point sampling."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Export a depth dataset to nerfstudio, COLMAP or PLY."""
    from depthcli.console import report
    from depthcli.export import ExportConfig, export_dataset

    cfg = ExportConfig(
        dataset=dataset, out=out, to=to.lower(), overwrite=overwrite, voxel_size=voxel_size, stride=stride,
        points_per_frame=points_per_frame, depth_scale=depth_scale, seed=seed,
    )
    summary = export_dataset(cfg)
    report(summary, title=f"exported {dataset} -> {to} {out}", as_json=json)
