"""``depthcli align PRED TARGET OUT``: fit monocular predictions to sparse or sensor depth.

Thin: flags -> :class:`depthcli.prior.AlignConfig` -> :func:`depthcli.prior.align_prior`
-> per-frame table and summary. Only typer and the standard library at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = (
    "Align predictions (affine-invariant disparity from predict, or depth) to the sparse SfM or sensor depth of "
    "the same frames: robust per-image scale and shift; writes a dense z-depth prior in the target's units."
)


def command(
    pred: Path = typer.Argument(..., help="Prediction dataset (e.g. depthcli predict output)."),
    target: Path = typer.Argument(..., help="Dataset with sparse or sensor z-depth (e.g. depthcli convert of a COLMAP model)."),
    out: Path = typer.Argument(..., help="Aligned prior dataset to create."),
    space: str = typer.Option("auto", "--space", help="Fit space: auto (disparity for disparity predictions), depth or disparity."),
    fit: str = typer.Option("robust", "--fit", help="robust (least-median start + Tukey IRLS) or lstsq."),
    min_points: int = typer.Option(20, "--min-points", help="Skip frames with fewer target points than this."),
    max_depth: Optional[float] = typer.Option(None, "--max-depth", help="Aligned depth beyond this (target units) is invalid."),
    far_factor: float = typer.Option(3.0, "--far-factor", help="Without --max-depth: cap = this x the frame's largest target depth."),
    previews: bool = typer.Option(True, "--previews/--no-previews", help="Write previews and align_previews/ panels."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    json: bool = typer.Option(False, "--json", help="Print the summary (with every frame's fit) as JSON on stdout."),
) -> None:
    """Align predictions to sparse or sensor depth, per image."""
    from depthcli.console import print_table, report
    from depthcli.prior import AlignConfig, align_prior, fit_table

    cfg = AlignConfig(pred=pred, target=target, out=out, space=space, fit=fit, min_points=min_points,
                      max_depth=max_depth, far_factor=far_factor, previews=previews, overwrite=overwrite)
    summary = align_prior(cfg)
    if json:
        report(summary, "align", as_json=True)
        return
    cols, rows = fit_table(summary)
    print_table("align: per-frame fit", cols, rows)
    report({k: v for k, v in summary.items() if k != "frames"}, "align")
