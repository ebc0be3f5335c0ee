"""``depthcli demo [OUT]``: every command on a synthetic scene depthcli makes itself."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = (
    "Run the whole toolkit on synthetic rooms with exact depth: synth -> convert (COLMAP and RGB-D) -> "
    "depth-only splat training -> render -> teacher/student estimators -> eval. About 3 minutes on 2 CPU cores."
)


def command(
    out: Path = typer.Argument(Path("depthcli-demo"), help="Folder for everything the demo writes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing demo folder."),
    splat_steps: int = typer.Option(300, help="Gaussian-splat training steps."),
    estimators: bool = typer.Option(True, "--estimators/--no-estimators", help="Run the teacher/student stage."),
    estimator_steps: int = typer.Option(200, help="Training steps of the teacher, and of its student."),
    scenes: int = typer.Option(64, help="Labeled rooms for the teacher (and as many unlabeled ones for the student)."),
    teacher: Optional[Path] = typer.Option(
        None, help="Use this local Depth-Anything-V2 checkpoint folder as the teacher instead of training one."),
    init: str = typer.Option(
        "tiny-synth", help="Checkpoint the teacher is fine-tuned from and the student starts from: a folder, or "
        "tiny-synth (shipped with depthcli, pretrained on other synthetic scenes)."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Train teacher and student from random weights."),
    seed: int = typer.Option(0, help="Seed of every stage."),
    json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    from depthcli.console import report
    from depthcli.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=out, overwrite=overwrite, splat_steps=splat_steps, estimators=estimators,
                     estimator_steps=estimator_steps, scenes=scenes, teacher=teacher,
                     init=None if from_scratch else init, seed=seed)
    report(run_demo(cfg), "demo", as_json=json)
