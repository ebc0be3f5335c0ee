"""``depthcli predict``: relative depth for a folder of images."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = "Predict affine-invariant disparity for a folder of images; writes a depth dataset with previews."


def command(
    model: Path = typer.Argument(..., help="Checkpoint folder (config.json + model.safetensors)."),
    images: Path = typer.Argument(..., help="Folder of images."),
    out: Path = typer.Argument(..., help="Output depth dataset folder."),
    size: Optional[int] = typer.Option(None, "--size", help="Model input short side, multiple of 14."),
    previews: bool = typer.Option(True, "--previews/--no-previews", help="Write colourised previews."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
    json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Predict relative depth (affine-invariant disparity) for every image of a folder."""
    from depthcli.console import report
    from depthcli.estimators.predict import PredictConfig, predict

    cfg = PredictConfig(model=model, images=images, out=out, size=size, previews=previews, overwrite=overwrite,
                        threads=threads, device=device)
    report(predict(cfg), "predict", as_json=json)
