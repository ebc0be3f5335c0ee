"""Teacher -> student distillation on unlabeled images (Depth-Anything-V2 recipe).

Stage ``label``: the teacher(s) predict relative disparity on every unlabeled
image (clean, no augmentation). With several teachers, their predictions are
brought to a common scale (least squares onto the first teacher), averaged, and
pixels whose point-pair orders the teachers dispute are flagged
(:mod:`depthcli.estimators.voting`). Each label is one file written atomically
(``labels/items/NAME.npz``), so a half-written label is never read as
complete; ``labels/index.json`` is written last, once every image is labelled.
Under ``torchrun`` each rank labels a disjoint shard: every image exactly once.

Stage ``student``: train a student on the pseudo-labels only (by default with
strong perturbations on its inputs, labels from the clean images; ``augment=
"basic"`` keeps crop + flip only), ``epochs=1`` by default. Output::

    OUT/labels/items/*.npz   {"disparity": float32 [H,W], "mask": bool [H,W]}
    OUT/labels/ranks/*.jsonl which rank labelled which image (audit)
    OUT/labels/index.json    the complete label set (written last)
    OUT/student/             a train_estimator run: checkpoints/, model/, loss_curve.png
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from depthcli.errors import DepthcliError
from depthcli.estimators.data import samples_from_labels  # noqa: F401 (lives in data.py: training reads it without importing this module)


@dataclass
class DistillConfig:
    """Settings of :func:`distill` (CLI flags map onto these fields)."""

    teachers: list[Path]  # teacher checkpoint folders (transformers format); several -> voting
    images: Path | None  # folder of unlabeled images (needed for stage label/all)
    out: Path  # output folder (labels/, student/)
    stage: str = "all"  # "label", "student" or "all"
    agreement: bool = True  # with >= 2 teachers: leave pixels of disputed point pairs out of the loss
    agreement_tol: float = 0.02  # tie threshold for pair votes (fraction of each teacher's disparity range)
    label_size: int | None = None  # teacher input short side; None = each teacher's own size
    preset: str = "tiny"  # student model preset
    init: Path | None = None  # start the student from this checkpoint instead of random weights
    epochs: int = 1  # student epochs over the pseudo-labels
    batch_size: int = 8  # images per step per process
    lr: float = 5e-4  # student peak learning rate
    encoder_lr_factor: float = 1.0  # student backbone lr = lr * factor (see TrainConfig.encoder_lr_factor)
    augment: str = "strong"  # "strong" (colour jitter, blur, CutMix: Depth Anything's student) or "basic" (crop + flip)
    size: int | None = None  # student training crop; None = the student's input size
    val_fraction: float = 0.05  # pseudo-labeled images held out (student val loss)
    trim: float = 0.0  # SSI: ignore this fraction of the largest residuals
    align: str = "median"  # student SSI alignment: "median" or "lstsq" (see TrainConfig.align)
    grad_weight: float = 2.0  # student gradient-matching weight (see TrainConfig.grad_weight)
    seed: int = 0  # student init / order / augmentation
    resume: bool = False  # continue labelling / student training in OUT
    overwrite: bool = False  # replace an existing OUT
    checkpoint_every: int = 100  # student steps between checkpoints
    max_steps: int | None = None  # cap on student steps
    max_minutes: float | None = None  # student wall-time budget
    threads: int | None = None  # torch CPU threads per process
    device: str = "auto"  # "auto", "cpu" or "cuda"
    quiet: bool = False  # no progress bars

    def validate(self) -> None:
        """Refuse out-of-range settings (one line each) before any image is labelled."""
        from depthcli.estimators.models import PATCH
        from depthcli.estimators.training import check_training_settings
        from depthcli.validate import check_choice, check_fraction, check_multiple

        check_choice(self.stage, "stage (--stage)", ("label", "student", "all"))
        check_fraction(self.agreement_tol, "agreement_tol")
        check_multiple(self.label_size, "--label-size", PATCH, optional=True)
        check_training_settings(self)  # the student's settings, checked before the labelling stage


def label_stem(rel: str) -> str:
    """File stem of an image's label: readable + a hash of the relative path (unique)."""
    from depthcli.io.dataset import safe_stem

    return f"{safe_stem(rel)}-{zlib.crc32(rel.encode()):08x}"


def fuse_teachers(disps: list[np.ndarray], name: str, agreement_on: bool, tol: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(disparity, trusted mask, stats)`` from several teachers' disparities of one image.

    Each teacher is aligned to the first one by least squares (its scale/shift
    is arbitrary), then they are averaged. Voting seeds its pairs from ``name``
    so labels do not depend on which process computed them.
    """
    from depthcli.estimators.voting import pixel_agreement_mask

    ref = disps[0].astype(np.float64)
    valid = np.isfinite(ref) & (ref > 0)
    aligned = [ref]
    for d in disps[1:]:
        d = d.astype(np.float64)
        a = np.stack([d[valid], np.ones(int(valid.sum()))], 1)
        coef = np.linalg.lstsq(a, ref[valid], rcond=None)[0] if valid.sum() >= 2 else np.array([1.0, 0.0])
        aligned.append(coef[0] * d + coef[1])
        valid &= np.isfinite(d)
    fused = np.mean(aligned, axis=0)
    valid &= fused > 0
    stats: dict[str, Any] = {}
    mask = valid
    if agreement_on and len(disps) > 1:
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        mask, stats = pixel_agreement_mask(disps, valid, rng, tol)
    fused = np.where(valid, fused, 0).astype(np.float32)
    return fused, mask, stats


def _write_label(path: Path, disparity: np.ndarray, mask: np.ndarray) -> None:
    from depthcli.io.atomic import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, disparity=disparity.astype(np.float32), mask=mask.astype(bool))

    atomic_write(path, write)


def label_images(cfg: DistillConfig, dist) -> dict[str, Any]:
    """Stage ``label``: every image of ``cfg.images`` labelled once (this rank: its shard)."""
    from depthcli.console import progress_task
    from depthcli.estimators.data import list_images, shard, try_read_image, write_json
    from depthcli.estimators.models import load_model, model_input_size, predict_disparity
    from depthcli.estimators.training import all_sum, barrier, resolve_device

    if cfg.images is None:
        raise DepthcliError("--images is required to label", "pass the folder of unlabeled images")
    if not cfg.teachers:
        raise DepthcliError("no teacher given", "pass --teacher CHECKPOINT_DIR (repeat for several teachers)")
    labels = Path(cfg.out) / "labels"
    files, skipped = list_images(Path(cfg.images))
    if not files:
        raise DepthcliError(f"no images in '{cfg.images}'", "pass a folder of unlabeled .jpg/.png images")
    device = resolve_device(cfg.device, dist)
    teachers = [load_model(Path(t)).to(device) for t in cfg.teachers]
    items_dir = labels / "items"
    ranks_dir = labels / "ranks"
    if dist.main:
        items_dir.mkdir(parents=True, exist_ok=True)
        ranks_dir.mkdir(parents=True, exist_ok=True)
        for stale in items_dir.glob(".*.tmp.npz"):  # temp files of a run killed mid-write
            stale.unlink(missing_ok=True)
    barrier(dist)
    mine = shard(files, dist.rank, dist.world, equal=False)
    done = unreadable = 0
    trusted = []
    t0 = time.time()
    log_path = ranks_dir / f"rank_{dist.rank:03d}.jsonl"
    ctx = progress_task("label", len(mine)) if not cfg.quiet and dist.main else None
    bar, task = ctx.__enter__() if ctx is not None else (None, None)
    try:
        for path in mine:
            rel = str(path.relative_to(cfg.images))
            out = items_dir / f"{label_stem(rel)}.npz"
            if out.is_file():  # complete (written atomically) by an earlier, interrupted run
                if bar is not None:
                    bar.update(task, advance=1)
                continue
            img = try_read_image(path)
            if img is None:
                unreadable += 1
                with open(log_path, "a") as fh:
                    fh.write(json.dumps({"image": rel, "status": "unreadable"}) + "\n")
                if bar is not None:
                    bar.update(task, advance=1)
                continue
            disps = [predict_disparity(t, img, cfg.label_size or model_input_size(t)) for t in teachers]
            fused, mask, stats = fuse_teachers(disps, rel, cfg.agreement, cfg.agreement_tol)
            _write_label(out, fused, mask)
            if stats:
                trusted.append(stats["trusted_pixel_fraction"])
            done += 1
            with open(log_path, "a") as fh:
                fh.write(json.dumps({"image": rel, "label": out.name, "rank": dist.rank}) + "\n")
            if bar is not None:
                bar.update(task, advance=1, info=f"{done * dist.world / max(1e-9, time.time() - t0):.2f} img/s")
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
    tot = all_sum(dist, [done, unreadable, sum(trusted), len(trusted)])
    barrier(dist)
    summary: dict[str, Any] = {"labelled_now": int(tot[0]), "unreadable": int(tot[1]),
                               "skipped_non_image": len(skipped), "teachers": len(teachers)}
    if tot[3]:
        summary["trusted_pixel_fraction"] = tot[2] / tot[3]
    if dist.main:
        items = []
        for path in files:
            rel = str(path.relative_to(cfg.images))
            f = items_dir / f"{label_stem(rel)}.npz"
            if f.is_file():
                items.append({"name": rel, "image": str(Path(path).absolute()), "label": f"items/{f.name}"})
        write_json(labels / "index.json", {
            "labels": "fused teacher disparity (affine-invariant; larger = nearer) + trust mask, per image",
            "teachers": [str(t) for t in cfg.teachers], "agreement": cfg.agreement and len(teachers) > 1,
            "images": str(Path(cfg.images).absolute()), "items": items})
        summary["labels"] = len(items)
    barrier(dist)
    return summary


def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Pseudo-label unlabeled images with the teacher(s), then train a student on them; return a summary."""
    import torch

    from depthcli.estimators.training import TrainConfig, barrier, init_distributed, train_estimator

    cfg.validate()
    if cfg.stage not in ("label", "student", "all"):
        raise DepthcliError(f"unknown stage '{cfg.stage}'", "use label, student or all")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if cfg.stage in ("student", "all") and (cfg.epochs < 1 or cfg.batch_size < 1 or not cfg.lr > 0):
        raise DepthcliError("--epochs, --batch-size and --lr must be positive")  # before any labelling
    out = Path(cfg.out)
    labels = out / "labels"
    dist = init_distributed("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        from contextlib import ExitStack

        from depthcli.estimators.training import latest_checkpoint
        from depthcli.io.atomic import job_output_dir

        summary: dict[str, Any] = {"output": str(out), "stage": cfg.stage}
        with ExitStack() as stack:
            if dist.main:
                # A fresh labelling creates OUT (with depthcli's marker); --resume and the
                # student stage work only in a folder distill created. A user's folder is
                # never written into, and a fresh OUT that fails before any label is removed.
                existing = cfg.resume or cfg.stage == "student"
                stack.enter_context(job_output_dir(
                    out, "distill", resume=existing, overwrite=cfg.overwrite,
                    inputs=[cfg.images, *cfg.teachers, cfg.init],
                    keep=lambda o: any((o / "labels" / "items").glob("*.npz"))))
            barrier(dist)
            if cfg.stage in ("label", "all"):
                if cfg.resume and (labels / "index.json").exists() and dist.main:
                    (labels / "index.json").unlink()  # re-listed once the missing labels are done
                barrier(dist)
                summary.update(label_images(cfg, dist))
            if cfg.stage in ("student", "all"):
                student_dir = out / "student"
                # Continue the student if it has a checkpoint; otherwise start it again
                # (train replaces only a student folder depthcli created).
                resume_student = cfg.resume and latest_checkpoint(student_dir) is not None
                tcfg = TrainConfig(
                    datasets=[], out=student_dir, pseudo_labels=labels, preset=cfg.preset, init=cfg.init,
                    epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, size=cfg.size,
                    encoder_lr_factor=cfg.encoder_lr_factor, val_fraction=cfg.val_fraction, augment=cfg.augment,
                    trim=cfg.trim, seed=cfg.seed,
                    align=cfg.align, grad_weight=cfg.grad_weight,
                    resume=resume_student,
                    overwrite=not resume_student and (cfg.overwrite or cfg.resume or cfg.stage == "all"),
                    checkpoint_every=cfg.checkpoint_every, max_steps=cfg.max_steps, max_minutes=cfg.max_minutes,
                    threads=cfg.threads, device=cfg.device, quiet=cfg.quiet,
                )
                student = train_estimator(tcfg)
                summary["model"] = student["model"]  # the student, in transformers format
                summary.update({f"student_{k}": v for k, v in student.items() if k not in ("output", "model")})
        return summary
    finally:
        if dist.initialized_here:
            import torch.distributed as tdist

            tdist.destroy_process_group()
