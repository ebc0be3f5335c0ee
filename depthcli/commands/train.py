"""``depthcli train``: supervised training of a relative depth estimator."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

HELP = "Train a Depth-Anything-V2 estimator on depth datasets (relative disparity; torchrun for DDP)."


def command(
    inputs: List[Path] = typer.Argument(..., help="DATASET... OUT: depth datasets (or folders of datasets), then the output folder. DATASET:W gives a sampling weight."),
    weight: Optional[List[float]] = typer.Option(
        None, "--weight", help="Sampling weight of each DATASET, in order (repeat the flag); frames are drawn by source weight."
    ),
    preset: str = typer.Option("tiny", "--preset", help="Model size: tiny|small|base|large."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this checkpoint folder (transformers format), or tiny-synth (shipped with depthcli)."),
    epochs: int = typer.Option(10, "--epochs", help="Passes over the training split."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per step (per process)."),
    lr: float = typer.Option(5e-4, "--lr", help="Peak learning rate (decoder)."),
    encoder_lr_factor: float = typer.Option(1.0, "--encoder-lr-factor", help="Backbone lr = lr x this (0.1 when fine-tuning)."),
    size: Optional[int] = typer.Option(None, "--size", help="Square training crop, multiple of 14 (default: the model's size)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Fraction of frames held out for validation."),
    align: str = typer.Option("median", "--align", help="SSI alignment: median (median/MAD, keeps the sign) or lstsq."),
    trim: float = typer.Option(0.0, "--trim", help="Ignore this fraction of the largest residuals (SSI)."),
    max_depth: float = typer.Option(80.0, "--max-depth", help="Metres; farther pixels are dropped from targets."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", help="Steps between checkpoints."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many steps."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop cleanly after this wall time."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads per process."),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
    json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Train a relative depth estimator: DATASET... OUT."""
    from depthcli.console import report
    from depthcli.errors import DepthcliError
    from depthcli.estimators.training import TrainConfig, train_estimator

    if len(inputs) < 2:
        raise DepthcliError("train needs at least one DATASET and an OUT folder", "depthcli train DATASET... OUT")
    from depthcli.estimators.data import split_dataset_weight

    parsed = [split_dataset_weight(str(p)) for p in inputs[:-1]]
    datasets, weights = [p for p, _ in parsed], list(weight) if weight else None
    if any(w is not None for _, w in parsed):
        if weights is not None:
            raise DepthcliError("give dataset weights either as DATASET:W or with --weight, not both")
        weights = [1.0 if w is None else w for _, w in parsed]
    cfg = TrainConfig(
        datasets=list(inputs[:-1]), out=inputs[-1], preset=preset, init=init, epochs=epochs, batch_size=batch_size,
        lr=lr, encoder_lr_factor=encoder_lr_factor, size=size, val_fraction=val_fraction, align=align, trim=trim,
        max_depth=max_depth, seed=seed, resume=resume, overwrite=overwrite, checkpoint_every=checkpoint_every,
        max_steps=max_steps, max_minutes=max_minutes, threads=threads, num_workers=workers, device=device,
    )
    cfg.datasets, cfg.weights = datasets, weights
    summary = train_estimator(cfg)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        report(summary, "train", as_json=json)
