"""``depthcli distill``: pseudo-label unlabeled images with teachers, train a student on them."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

HELP = "Teacher -> student: pseudo-label unlabeled images (voting with several teachers), train a student."


def command(
    out: Path = typer.Argument(..., help="Output folder (labels/, student/)."),
    teacher: List[Path] = typer.Option([], "--teacher", help="Teacher checkpoint folder; repeat for several (voting)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of unlabeled images."),
    stage: str = typer.Option("all", "--stage", help="label|student|all."),
    agreement: bool = typer.Option(True, "--agreement/--no-agreement", help="With >= 2 teachers, mask disputed pixels."),
    label_size: Optional[int] = typer.Option(None, "--label-size", help="Teacher input short side (multiple of 14)."),
    preset: str = typer.Option("tiny", "--preset", help="Student size: tiny|small|base|large."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start the student from this checkpoint folder, or tiny-synth (shipped with depthcli)."),
    epochs: int = typer.Option(1, "--epochs", help="Student epochs."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per step (per process)."),
    lr: float = typer.Option(5e-4, "--lr", help="Student peak learning rate."),
    encoder_lr_factor: float = typer.Option(1.0, "--encoder-lr-factor", help="Student backbone lr = lr * this."),
    augment: str = typer.Option("strong", "--augment",
                                help="Student inputs: strong (colour jitter, blur, CutMix) or basic (crop + flip)."),
    size: Optional[int] = typer.Option(None, "--size", help="Student training crop, multiple of 14."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue labelling / student training in OUT."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", help="Student steps between checkpoints."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap on student steps."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Student wall-time budget."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads per process."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
    json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Distil teacher(s) into a student via pseudo-labels: --teacher T --images DIR OUT."""
    import os

    from depthcli.console import report
    from depthcli.estimators.distill import DistillConfig, distill

    cfg = DistillConfig(
        teachers=list(teacher), images=images, out=out, stage=stage, agreement=agreement, label_size=label_size,
        preset=preset, init=init, epochs=epochs, batch_size=batch_size, lr=lr, encoder_lr_factor=encoder_lr_factor,
        augment=augment, size=size, seed=seed, resume=resume,
        overwrite=overwrite, checkpoint_every=checkpoint_every, max_steps=max_steps, max_minutes=max_minutes,
        threads=threads, device=device,
    )
    summary = distill(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        report(summary, "distill", as_json=json)
