"""``depthcli demo [OUT]``: every command on a synthetic scene depthcli makes itself."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = (
    "Run the whole toolkit on a synthetic scene with exact depth: synth -> convert (COLMAP and RGB-D) -> "
    "depth-only splat training -> render -> teacher/student estimators -> eval. A few minutes on 2 CPU cores."
)


def command(
    out: Path = typer.Argument(Path("depthcli-demo"), help="Folder for everything the demo writes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing demo folder."),
    splat_steps: int = typer.Option(1000, help="Gaussian-splat training steps."),
    estimators: bool = typer.Option(True, "--estimators/--no-estimators", help="Run the teacher/student stage."),
    estimator_steps: int = typer.Option(1000, help="Training steps of the tiny teacher, and of its student."),
    seed: int = typer.Option(0, help="Seed of every stage."),
    json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    from depthcli.console import report
    from depthcli.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=out, overwrite=overwrite, splat_steps=splat_steps, estimators=estimators,
                     estimator_steps=estimator_steps, seed=seed)
    report(run_demo(cfg), "demo", as_json=json)
