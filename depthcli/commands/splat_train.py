"""``depthcli splat-train``: fit Gaussian splats to a depth dataset (depth, optionally RGB).

Thin: flags -> :class:`depthcli.splat.trainer.SplatTrainConfig` ->
:func:`depthcli.splat.trainer.train_splats` -> summary. Only typer and the standard
library are imported at module level.
"""

from pathlib import Path
from typing import List, Optional

import typer

HELP = (
    "Train depth-supervised Gaussian splats on a depth dataset (CPU or CUDA). Writes OUT/splats.ply "
    "(3DGS layout, the dataset's world frame and units), OUT/metrics.json (held-out AbsRel, RMSE, delta1, "
    "coverage), OUT/curves.png and resumable checkpoints."
)


def command(
    dataset: Path = typer.Argument(..., help="Depth dataset folder (dataset.json, z-depth)."),
    out: Path = typer.Argument(..., help="Job folder to create (or continue with --resume)."),
    mode: str = typer.Option(
        "ED", "--mode", help="Trained render: ED (expected depth), D (accumulated depth), RGB+ED or RGB+D (needs images)."
    ),
    steps: int = typer.Option(1200, "--steps", help="Optimisation steps (one training view per step)."),
    backend: str = typer.Option(
        "auto", "--backend", help="Rasteriser: auto (cpu on CPU, gsplat on CUDA), cpu (compiled), gsplat or torch."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", help="Rasteriser threads on CPU (default: all cores)."),
    device: str = typer.Option("cpu", "--device", help="Torch device: cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Random seed (fixed seed on CPU = reproducible run)."),
    test_every: int = typer.Option(8, "--test-every", help="Hold out every N-th frame for evaluation (0: none)."),
    depth_loss: List[str] = typer.Option(
        ["l1"], "--depth-loss", help="Depth term NAME[:WEIGHT], repeatable: l1, log-l1, edge-log-l1, pearson, disparity-l1, "
        "grad, multiscale (docs/depth_losses.md); 'depth'/'disparity' = l1/disparity-l1."),
    prior: Optional[Path] = typer.Option(None, "--prior", help="Dense prior dataset (depthcli align output), matched by frame name."),
    prior_loss: List[str] = typer.Option(["l1"], "--prior-loss", help="Terms on the prior, NAME[:WEIGHT] (pearson: unaligned prior)."),
    prior_weight: float = typer.Option(1.0, "--prior-weight", help="Prior weight at the first step."),
    prior_weight_final: float = typer.Option(0.01, "--prior-weight-final", help="Prior weight at the last step (exponential decay; 0: linear)."),
    prior_init: bool = typer.Option(True, "--prior-init/--no-prior-init", help="Seed Gaussians from the aligned prior too."),
    densify: str = typer.Option("auto", "--densify", help="Densification: auto, gsplat, torch or off."),
    min_depth: Optional[float] = typer.Option(None, "--min-depth", help="Ignore target depth below this (dataset units)."),
    max_depth: Optional[float] = typer.Option(None, "--max-depth", help="Ignore target depth beyond this (dataset units)."),
    max_init_points: int = typer.Option(60000, "--max-init-points", help="Initial Gaussians at most (voxel-downsampled)."),
    eval_every: int = typer.Option(500, "--eval-every", help="Steps between held-out evaluations."),
    pose_opt: Optional[bool] = typer.Option(
        None, "--pose-opt/--no-pose-opt",
        help="Refine each training camera's pose with the splats; held-out cameras are then scored where the "
        "refined trajectory places them. Default: on for RGB-D captures with tracked poses (7-Scenes, TUM, ScanNet)."),
    lr_pose: float = typer.Option(1e-3, "--lr-pose", help="Adam learning rate of the training-pose corrections."),
    heldout_pose_align: bool = typer.Option(
        True, "--heldout-pose-align/--no-heldout-pose-align",
        help="At the end, also report held-out metrics after refining each held-out camera's pose against its "
        "own depth (splats frozen; separates pose error from splat error)."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", help="Steps between checkpoints."),
    resume: bool = typer.Option(False, "--resume", help="Continue the job in OUT from its newest checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing job folder."),
    json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Train depth-supervised Gaussian splats on a depth dataset."""
    from depthcli.console import report
    from depthcli.splat.trainer import SplatTrainConfig, train_splats

    cfg = SplatTrainConfig(
        dataset=dataset,
        out=out,
        mode=mode,
        steps=steps,
        backend=backend,
        threads=threads,
        device=device,
        seed=seed,
        test_every=test_every,
        depth_loss=",".join(depth_loss),
        prior=None if prior is None else str(prior),
        prior_loss=",".join(prior_loss),
        prior_weight=prior_weight,
        prior_weight_final=prior_weight_final,
        prior_init=prior_init,
        densify=densify,
        min_depth=min_depth,
        max_depth=max_depth,
        max_init_points=max_init_points,
        eval_every=eval_every,
        pose_opt=pose_opt,
        lr_pose=lr_pose,
        heldout_pose_align=heldout_pose_align,
        checkpoint_every=checkpoint_every,
        resume=resume,
        overwrite=overwrite,
    )
    summary = train_splats(cfg)
    report(summary, title="splat-train", as_json=json)
