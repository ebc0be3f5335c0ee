"""``depthcli render``: render trained splats at every camera of a depth dataset.

Thin: flags -> :func:`depthcli.splat.render_dataset.render_dataset` -> summary. Only
typer and the standard library are imported at module level.
"""

from pathlib import Path
from typing import Optional

import typer

HELP = (
    "Render Gaussian splats (a 3DGS .ply) at every camera of a depth dataset and write the rendered "
    "z-depth (and RGB when the splats have colour) as a new depth dataset in the same units."
)


def command(
    splats: Path = typer.Argument(..., help="3DGS PLY file (e.g. OUT/splats.ply from splat-train)."),
    dataset: Path = typer.Argument(..., help="Depth dataset whose cameras are rendered."),
    out: Path = typer.Argument(..., help="Depth dataset folder to create."),
    mode: str = typer.Option("ED", "--mode", help="Depth to render: ED (expected) or D (accumulated)."),
    backend: str = typer.Option(
        "auto", "--backend", help="Rasteriser: auto (cpu on CPU, gsplat on CUDA), cpu (compiled), gsplat or torch."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", help="Rasteriser threads on CPU (default: all cores)."),
    device: str = typer.Option("cpu", "--device", help="Torch device: cpu or cuda."),
    min_alpha: float = typer.Option(0.5, "--min-alpha", help="Pixels with alpha at or below this are stored invalid (0)."),
    rgb: bool = typer.Option(True, "--rgb/--no-rgb", help="Also render RGB when the splats have colour."),
    previews: bool = typer.Option(False, "--previews", help="Write colourised depth previews."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Render Gaussian splats at every camera of a depth dataset."""
    from depthcli.console import report
    from depthcli.splat.render_dataset import render_dataset

    summary = render_dataset(
        splats, dataset, out, mode=mode, backend=backend, device=device, min_alpha=min_alpha,
        rgb=rgb, previews=previews, overwrite=overwrite, threads=threads,
    )
    report(summary, title="render", as_json=json)
