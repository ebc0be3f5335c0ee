"""Supervised training of a relative depth estimator (the Depth-Anything-V2 recipe).

``train_estimator(TrainConfig(...))`` trains on depth datasets (teacher) or on a
pseudo-label folder (student, see :mod:`depthcli.estimators.distill`). Targets
are min-max normalised disparity (far pixels > ``max_depth`` metres masked);
the loss is SSI + 2 x multi-scale gradient matching.

Runs single-process or under ``torchrun`` (DDP: gloo on CPU, NCCL on GPU):
each rank trains on a disjoint shard of every epoch's sample order; rank 0
writes checkpoints. Output folder::

    OUT/checkpoints/step_N_eE/      model (safetensors + config) + trainer_state.pt
    OUT/checkpoints/latest.json     which checkpoint is complete (written last)
    OUT/model/                      final model (transformers format)
    OUT/history.json, OUT/loss_curve.png, OUT/train_config.json
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from depthcli.errors import DepthcliError


@dataclass
class TrainConfig:
    """Settings of :func:`train_estimator` (CLI flags map onto these fields)."""

    datasets: list[Path]  # depth datasets, or folders holding several datasets
    out: Path  # output folder (checkpoints, final model, curves)
    pseudo_labels: Path | None = None  # a distill labels folder: train on pseudo-labels instead of datasets
    weights: list[float] | None = None  # sampling weight per entry of datasets (None: every frame equally likely)
    preset: str = "tiny"  # model size from depthcli.estimators.models.PRESETS
    init: Path | None = None  # start from this checkpoint folder instead of random weights
    epochs: int = 10  # passes over the training split
    batch_size: int = 8  # images per step per process
    lr: float = 5e-4  # peak learning rate of the decoder (neck + head)
    encoder_lr_factor: float = 1.0  # backbone lr = lr * factor (Depth Anything uses 0.1 when fine-tuning)
    weight_decay: float = 0.01  # AdamW weight decay
    size: int | None = None  # square training crop (multiple of 14); None = the model's input size
    val_fraction: float = 0.1  # fraction of frames held out for validation (by name, deterministic)
    augment: str = "basic"  # "basic" (crop + flip) or "strong" (+ colour jitter, blur, CutMix: the student)
    align: str = "median"  # SSI alignment: "median" (median / MAD: keeps the sign, larger = nearer) or "lstsq"
    trim: float = 0.0  # ignore this fraction of the largest residuals per image (0.1-0.2 typical)
    grad_weight: float = 2.0  # weight of gradient matching (SSI : GM = 1 : 2)
    grad_scales: int = 4  # scales of gradient matching
    dead_relu_weight: float = 0.1  # penalty on negative pre-activations of the head's final ReLU (0 = off)
    max_depth: float | None = 80.0  # metres; farther pixels are dropped from targets (metric datasets only)
    seed: int = 0  # model init, sample order, augmentations
    resume: bool = False  # continue from OUT/checkpoints/latest.json
    overwrite: bool = False  # replace an existing OUT
    checkpoint_every: int = 100  # steps between checkpoints (and one at every epoch end)
    max_steps: int | None = None  # stop after this many steps in total (tests, smoke runs)
    max_minutes: float | None = None  # stop (cleanly, with a checkpoint) after this much wall time; lr anneals by time
    threads: int | None = None  # torch CPU threads per process (None = leave torch's default)
    num_workers: int = 0  # DataLoader worker processes
    device: str = "auto"  # "auto", "cpu" or "cuda"
    quiet: bool = False  # no progress bar

    def validate(self) -> None:
        """Refuse out-of-range settings (one line each) before anything is read or written."""
        from depthcli.validate import check_choice, check_float, check_int, check_positive

        check_training_settings(self)
        check_choice(self.align, "alignment (--align)", ("median", "lstsq"))
        check_float(self.weight_decay, "weight_decay", min=0.0)
        check_float(self.grad_weight, "grad_weight", min=0.0)
        check_int(self.grad_scales, "grad_scales", min=1, max=8)
        check_float(self.dead_relu_weight, "dead_relu_weight", min=0.0)
        check_positive(self.max_depth, "--max-depth", optional=True)
        check_int(self.num_workers, "--workers", min=0, max=256)
        if self.weights is not None and self.pseudo_labels is None:
            from depthcli.estimators.data import check_weights

            check_weights(self.weights, len(self.datasets))


def check_training_settings(cfg: Any) -> None:
    """The settings train and distill share (same field names on both configs)."""
    from depthcli.estimators.models import PATCH, PRESETS
    from depthcli.validate import check_choice, check_device, check_fraction, check_int, check_multiple, check_float, check_seed

    check_choice(cfg.preset, "preset (--preset)", PRESETS)
    check_int(cfg.epochs, "--epochs", min=1, max=10**6)
    check_int(cfg.batch_size, "--batch-size", min=1, max=65536)
    check_float(cfg.lr, "--lr", min=0.0, max=1.0, min_open=True, hint="e.g. 5e-4")
    check_multiple(cfg.size, "--size", PATCH, optional=True)
    check_fraction(cfg.val_fraction, "--val-fraction")
    check_fraction(cfg.trim, "--trim", hint="the fraction of largest residuals ignored, e.g. 0.1")
    check_seed(cfg.seed)
    check_int(cfg.checkpoint_every, "--checkpoint-every", min=1)
    check_int(cfg.max_steps, "--max-steps", min=1, optional=True)
    check_float(cfg.max_minutes, "--max-minutes", min=0.0, min_open=True, optional=True)
    check_int(cfg.threads, "--threads", min=1, max=1024, optional=True)
    check_device(cfg.device)
    check_choice(cfg.augment, "augmentation (--augment)", ("basic", "strong"))
    check_float(cfg.encoder_lr_factor, "--encoder-lr-factor", min=0.0, max=1e3)


# ----------------------------------------------------------------------------- distributed helpers


@dataclass
class Dist:
    """This process' place in a (possibly single-process) job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    import torch.distributed as tdist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if tdist.is_initialized():
        return Dist(rank, world, local, False)
    backend = "nccl" if device == "cuda" else "gloo"
    tdist.init_process_group(backend=backend)
    return Dist(rank, world, local, True)


def barrier(dist: Dist) -> None:
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()


def all_sum(dist: Dist, values: list[float]) -> list[float]:
    """Sum floats over ranks."""
    if dist.world <= 1:
        return values
    import torch
    import torch.distributed as tdist

    t = torch.tensor(values, dtype=torch.float64)
    tdist.all_reduce(t)
    return t.tolist()


def broadcast_flag(dist: Dist, value: bool) -> bool:
    """Rank 0's boolean, on every rank (used to stop all ranks together)."""
    if dist.world <= 1:
        return value
    import torch
    import torch.distributed as tdist

    t = torch.tensor([1 if value else 0])
    tdist.broadcast(t, 0)
    return bool(t.item())


def resolve_device(device: str, dist: Dist):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise DepthcliError("--device cuda requested but no CUDA GPU is available", "use --device cpu")
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


# ----------------------------------------------------------------------------- checkpoints


def latest_checkpoint(out: Path) -> Path | None:
    """The last complete checkpoint folder of a run, or None.

    ``latest.json`` is data: the folder it names must lie inside ``checkpoints/``.
    """
    from depthcli.io.paths import resolve_inside

    ck_dir = Path(out) / "checkpoints"
    p = ck_dir / "latest.json"
    if not p.is_file():
        return None
    try:
        name = json.loads(p.read_text())["checkpoint"]
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError):
        raise DepthcliError(f"'{p}' is damaged", "start again with --overwrite") from None
    ck = resolve_inside(ck_dir, name, f"'{p}' checkpoint")
    return ck if (ck / "trainer_state.pt").is_file() else None


def _load_trainer_state(ck: Path) -> dict[str, Any]:
    """Optimizer state and counters of a checkpoint: tensors and plain data only, never code."""
    from depthcli.io.checkpoint import load_tensors_only

    path = ck / "trainer_state.pt"
    try:
        return load_tensors_only(path, "trainer state")
    except DepthcliError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file
        raise DepthcliError(f"--resume: cannot read '{path}': {type(exc).__name__}",
                            "start again with --overwrite") from None


def _check_state_numbers(state: Any, ck: Path) -> None:
    """The counters of a checkpoint's trainer state: non-negative integers."""
    from depthcli.validate import check_int

    if not isinstance(state, dict):
        raise DepthcliError(f"--resume: '{ck / 'trainer_state.pt'}' has no trainer state", "start again with --overwrite")
    for key in ("epoch", "step_in_epoch", "global_step"):
        check_int(state.get(key), f"--resume: '{ck.name}' {key}", min=0, hint="start again with --overwrite")
    check_int(state.get("world", 1), f"--resume: '{ck.name}' world", min=1, max=65536, hint="start again with --overwrite")


def _save_checkpoint(out: Path, model, optimizer, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``checkpoints/step_N`` atomically, then point ``latest.json`` at it."""
    import torch

    from depthcli.estimators.models import save_model
    from depthcli.estimators.data import write_json
    from depthcli.io.atomic import atomic_write

    ck_dir = Path(out) / "checkpoints"
    # The epoch is in the name: the step-N checkpoint and the end-of-epoch one
    # written right after it never overwrite each other (latest always complete).
    name = f"step_{state['global_step']:07d}_e{state['epoch']:04d}"
    final = ck_dir / name
    save_model(model, final, {"trainer": "depthcli train", "global_step": state["global_step"]})
    blob = {"optimizer": optimizer.state_dict(), "state": state}
    atomic_write(final / "trainer_state.pt", lambda p: torch.save(blob, p))
    write_json(ck_dir / "latest.json", {"checkpoint": name, "global_step": state["global_step"]})
    old = sorted(d for d in ck_dir.iterdir() if d.is_dir() and d.name.startswith("step_") and d.name != name)
    for d in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(d, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------- training


def _lr_factor(step: int, total: int, warmup: int, time_fraction: float = 0.0) -> float:
    """Linear warm-up then cosine decay to 10 % of the peak.

    Progress is the larger of the step fraction and ``time_fraction`` (elapsed /
    ``max_minutes``), so a time-boxed run still anneals before it stops.
    """
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, max((step - warmup) / max(1, total - warmup), time_fraction))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def _loss(cfg: TrainConfig, pred, target, mask, box):
    """SSI + GM; with CutMix the pasted box and the rest are aligned separately."""
    from depthcli.losses import depth_anything_loss

    kw = dict(method=cfg.align, trim=cfg.trim, grad_weight=cfg.grad_weight, scales=cfg.grad_scales)
    if box is None or not bool(box.any()):
        return depth_anything_loss(pred, target, mask, **kw)
    ma, mb = mask & ~box, mask & box
    na, nb = float(ma.sum()), float(mb.sum())
    la = depth_anything_loss(pred, target, ma, **kw)
    lb = depth_anything_loss(pred, target, mb, **kw)
    return (la * na + lb * nb) / max(1.0, na + nb)


def _prepare_out(cfg: TrainConfig, dist: Dist, stack) -> Path | None:
    """Lock / create the output folder (rank 0, held by ``stack``); return the checkpoint to resume from.

    ``--resume`` needs a depthcli train folder with a complete checkpoint; a
    fresh run gets a new folder with depthcli's marker (``--overwrite`` replaces
    only such a folder), removed again if the run fails before its first checkpoint.
    """
    from depthcli.io.atomic import check_resumable, job_output_dir

    out = Path(cfg.out)
    if dist.main:
        if cfg.resume:
            check_resumable(out, "train")
            if latest_checkpoint(out) is None:
                raise DepthcliError(f"--resume: nothing to resume in '{out}' (no complete checkpoint)",
                                    "start again with --overwrite")
        inputs = [*cfg.datasets, cfg.init, cfg.pseudo_labels]
        stack.enter_context(job_output_dir(out, "train", resume=cfg.resume, overwrite=cfg.overwrite, inputs=inputs,
                                           keep=lambda o: latest_checkpoint(o) is not None))
    barrier(dist)
    return latest_checkpoint(out) if cfg.resume else None


def _build_samples(cfg: TrainConfig):
    from depthcli.estimators.data import samples_from_datasets, split_train_val

    if cfg.pseudo_labels is not None:
        from depthcli.estimators.data import samples_from_labels

        samples = samples_from_labels(Path(cfg.pseudo_labels))
    else:
        if not cfg.datasets:
            raise DepthcliError("no training datasets given", "pass one or more depth datasets")
        if cfg.weights is not None:
            from depthcli.estimators.data import check_weights

            cfg.weights = check_weights(cfg.weights, len(cfg.datasets))
        samples = samples_from_datasets([Path(d) for d in cfg.datasets])
    return split_train_val(samples, cfg.val_fraction, cfg.seed)


def validate(model, loader, cfg: TrainConfig, device, dist: Dist) -> dict[str, float]:
    """Validation loss, and AbsRel / delta1 after least-squares alignment in disparity space.

    Sums are reduced over ranks (each rank validates its own shard).
    """
    import torch

    from depthcli.estimators.models import forward_disparity
    from depthcli.losses import lstsq_disparity_metrics

    sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # loss*n, n, abs_rel*m, delta1*m, m
    model.eval()
    with torch.inference_mode():
        for image, target, mask, gt in loader:
            image, target, mask, gt = image.to(device), target.to(device), mask.to(device), gt.to(device)
            pred = forward_disparity(model, image).float()
            n = image.shape[0]
            sums[0] += float(_loss(cfg, pred, target, mask, None)) * n
            sums[1] += n
            has_gt = (gt > 0).flatten(1).any(1)
            if has_gt.any():
                m = lstsq_disparity_metrics(pred[has_gt].double().cpu(), gt[has_gt].double().cpu(),
                                            mask[has_gt].cpu())
                sums[2] += m["abs_rel"] * m["images"]
                sums[3] += m["delta1"] * m["images"]
                sums[4] += m["images"]
    model.train()
    sums = all_sum(dist, sums)
    res = {"val_loss": sums[0] / sums[1] if sums[1] else float("nan")}
    if sums[4]:
        res["val_abs_rel"] = sums[2] / sums[4]
        res["val_delta1"] = sums[3] / sums[4]
    return res


def plot_loss_curve(history: dict[str, Any], path: Path) -> None:
    """Training loss per step (and validation loss per epoch) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from depthcli.io.atomic import atomic_write

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    steps = [s for s, _ in history["train"]]
    ax.plot(steps, [v for _, v in history["train"]], lw=0.8, label="train loss")
    val = [(e["global_step"], e["val_loss"]) for e in history["epochs"] if math.isfinite(e.get("val_loss", math.nan))]
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("SSI + 2 x GM")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def _freeze_unused(model, device) -> None:
    """Turn off ``requires_grad`` of parameters the forward pass never uses.

    Depth Anything has some (the backbone's mask token, the first fusion
    layer's first residual unit); DDP would otherwise wait for their gradients.
    A probe forward/backward on a small input finds them (the same on every rank).
    """
    import torch

    from depthcli.estimators.models import PATCH, forward_disparity

    model.zero_grad(set_to_none=True)
    forward_disparity(model, torch.rand(1, 3, 2 * PATCH, 2 * PATCH, device=device)).sum().backward()
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.requires_grad_(False)
    model.zero_grad(set_to_none=True)


def train_estimator(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume training) a Depth-Anything-V2 estimator; return a summary dict.

    Works under ``torchrun`` (one process per rank). The final model is
    written to ``cfg.out / "model"`` by rank 0.
    """
    from contextlib import ExitStack

    from depthcli.errors import after_disk_full

    cfg.validate()
    try:
        with ExitStack() as stack:  # holds the output folder's lock for the run
            return _train_estimator(cfg, stack)
    except Exception as exc:
        after_disk_full(exc, cfg.out, "train")
        raise


def _train_estimator(cfg: TrainConfig, stack) -> dict[str, Any]:
    import torch

    from depthcli.console import log, progress_task
    from depthcli.estimators.data import SampleDataset, shard, strong_augment, weighted_order, write_json
    from depthcli.estimators.models import PATCH, build_model, forward_disparity, load_model, model_input_size

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if cfg.align not in ("median", "lstsq"):
        raise DepthcliError(f"unknown alignment '{cfg.align}'", "use median or lstsq")
    if cfg.augment not in ("basic", "strong"):
        raise DepthcliError(f"unknown augmentation '{cfg.augment}'", "use basic or strong")
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise DepthcliError("--epochs, --batch-size and --lr must be positive")
    dist = init_distributed("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        device = resolve_device(cfg.device, dist)
        train_refs, val_refs = _build_samples(cfg)
        if len(train_refs) < dist.world:
            raise DepthcliError(f"only {len(train_refs)} training frames for {dist.world} processes")
        resume_from = _prepare_out(cfg, dist, stack)

        # ---- model
        if resume_from is not None:
            model = load_model(resume_from)
        elif cfg.init is not None:
            model = load_model(Path(cfg.init))
        else:
            model = build_model(cfg.preset, cfg.size, seed=cfg.seed)
        size = int(cfg.size or model_input_size(model))
        if size % PATCH:
            raise DepthcliError(f"--size must be a multiple of {PATCH}, got {size}", f"e.g. {size // PATCH * PATCH}")
        model.depthcli_meta = dict(getattr(model, "depthcli_meta", {}) or {}, input_size=size)
        model.to(device).train()
        net = model
        if dist.world > 1:
            _freeze_unused(model, device)
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )

        # ---- optimiser (backbone at lr * encoder_lr_factor)
        enc = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
        dec = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
        groups = [{"params": enc, "lr": cfg.lr * cfg.encoder_lr_factor, "base": cfg.lr * cfg.encoder_lr_factor},
                  {"params": dec, "lr": cfg.lr, "base": cfg.lr}]
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

        pre_relu: list = []  # the head's last conv output (before its ReLU), captured per step
        head_conv = getattr(getattr(model, "head", None), "conv3", None)
        if head_conv is not None and cfg.dead_relu_weight > 0:
            head_conv.register_forward_hook(lambda m, _i, out: pre_relu.append(out.float()) if m.training else None)
        per_rank = len(train_refs) // dist.world
        steps_per_epoch = max(1, math.ceil(per_rank / cfg.batch_size))
        total_steps = cfg.epochs * steps_per_epoch
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        state: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0,
                                 "history": {"train": [], "epochs": []}, "world": dist.world}
        if resume_from is not None:
            blob = _load_trainer_state(resume_from)
            optimizer.load_state_dict(blob["optimizer"])
            state = blob["state"]
            _check_state_numbers(state, resume_from)
            if state.get("world", 1) != dist.world:
                raise DepthcliError(
                    f"this run was started with {state.get('world', 1)} processes, now {dist.world}",
                    "resume with the same number of processes (the per-epoch shards depend on it)",
                )
            if dist.main:
                log(f"resuming from {resume_from.name} (epoch {state['epoch'] + 1}, step {state['global_step']})")
        if dist.main:
            write_json(Path(cfg.out) / "train_config.json",
                       {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
                       | {"datasets": [str(Path(d).resolve()) for d in cfg.datasets], "world_size": dist.world,
                          "train_frames": len(train_refs), "val_frames": len(val_refs), "size": size})

        train_ds = SampleDataset(train_refs, size, train=True, max_depth=cfg.max_depth, seed=cfg.seed)
        val_loader = None
        if val_refs:
            val_ds = SampleDataset(shard(val_refs, dist.rank, dist.world, equal=False), size, train=False,
                                   max_depth=cfg.max_depth)
            val_loader = torch.utils.data.DataLoader(val_ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + dist.rank)
        warmup = max(1, min(50, total_steps // 10))
        t_start = time.time()
        images_seen = 0
        stop = state["global_step"] >= total_steps
        ctx = progress_task(f"train ({dist.world} proc)" if dist.world > 1 else "train", total_steps) \
            if dist.main and not cfg.quiet else None
        bar, task = ctx.__enter__() if ctx is not None else (None, None)
        if bar is not None:
            bar.update(task, completed=state["global_step"])
        try:
            while not stop and state["epoch"] < cfg.epochs:
                epoch = state["epoch"]
                train_ds.epoch = epoch
                order = torch.randperm(len(train_refs), generator=torch.Generator().manual_seed(cfg.seed + 7919 * epoch))
                if cfg.weights is not None and cfg.pseudo_labels is None:  # mix sources at fixed proportions
                    order = torch.tensor(weighted_order(train_refs, cfg.weights, len(train_refs), cfg.seed + 7919 * epoch))
                mine = shard(order.tolist(), dist.rank, dist.world, equal=True)
                mine = mine[state["step_in_epoch"] * cfg.batch_size:]
                loader = torch.utils.data.DataLoader(
                    torch.utils.data.Subset(train_ds, mine), batch_size=cfg.batch_size, shuffle=False,
                    num_workers=cfg.num_workers, drop_last=False,
                )
                gen.manual_seed(cfg.seed * 1000 + dist.rank + 100003 * state["global_step"])
                for image, target, mask, _gt in loader:
                    t0 = time.time()
                    image, target, mask = image.to(device), target.to(device), mask.to(device)
                    box = None
                    if cfg.augment == "strong":
                        image, target, mask, box = strong_augment(image.cpu(), target.cpu(), mask.cpu(), gen)
                        image, target, mask, box = image.to(device), target.to(device), mask.to(device), box.to(device)
                    time_fraction = 0.0
                    if cfg.max_minutes:
                        time_fraction = (time.time() - t_start) / (60.0 * cfg.max_minutes)
                        time_fraction = all_sum(dist, [time_fraction])[0] / dist.world  # same lr on every rank
                    for g in optimizer.param_groups:
                        g["lr"] = g["base"] * _lr_factor(state["global_step"], total_steps, warmup, time_fraction)
                    pre_relu.clear()
                    pred = forward_disparity(net, image).float()
                    loss = _loss(cfg, pred, target, mask, box)
                    if pre_relu:
                        # Revive pixels stuck below the head's final ReLU (zero output, zero
                        # gradient); exactly 0 while every pre-activation is positive.
                        loss = loss + cfg.dead_relu_weight * torch.relu(-pre_relu[0]).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    state["global_step"] += 1
                    state["step_in_epoch"] += 1
                    lv = all_sum(dist, [float(loss.detach())])[0] / dist.world
                    state["history"]["train"].append((state["global_step"], lv))
                    images_seen += image.shape[0] * dist.world
                    if bar is not None:
                        ips = image.shape[0] * dist.world / max(1e-9, time.time() - t0)
                        bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs} loss {lv:.4f} {ips:.1f} img/s")
                    out_of_time = cfg.max_minutes is not None and (time.time() - t_start) / 60 > cfg.max_minutes
                    stop = state["global_step"] >= total_steps or broadcast_flag(dist, out_of_time)
                    if stop or state["global_step"] % cfg.checkpoint_every == 0:
                        if dist.main:
                            _save_checkpoint(cfg.out, model, optimizer, state)
                        barrier(dist)
                    if stop:
                        break
                if state["step_in_epoch"] >= steps_per_epoch or not stop:
                    ep = {"epoch": epoch + 1, "global_step": state["global_step"],
                          "train_loss": float(sum(v for _, v in state["history"]["train"][-steps_per_epoch:])
                                              / max(1, min(steps_per_epoch, len(state["history"]["train"]))))}
                    if val_loader is not None:
                        ep.update(validate(net if dist.world == 1 else model, val_loader, cfg, device, dist))
                    state["history"]["epochs"].append(ep)
                    state["epoch"] += 1
                    state["step_in_epoch"] = 0
                    if dist.main:
                        _save_checkpoint(cfg.out, model, optimizer, state)
                        msg = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in ep.items())
                        if not cfg.quiet:
                            log(msg)
                    barrier(dist)
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)

        elapsed = time.time() - t_start
        summary: dict[str, Any] = {"output": str(cfg.out), "model": str(Path(cfg.out) / "model"),
                                   "preset": model.depthcli_meta.get("preset", "checkpoint"),
                                   "processes": dist.world, "train_frames": len(train_refs),
                                   "val_frames": len(val_refs), "epochs_done": state["epoch"],
                                   "steps": state["global_step"], "size": size,
                                   "seconds": round(elapsed, 2),
                                   "images_per_s": round(images_seen / elapsed, 2) if elapsed > 0 else 0.0}
        if state["history"]["train"]:
            summary["final_train_loss"] = state["history"]["train"][-1][1]
        if state["history"]["epochs"]:
            last = state["history"]["epochs"][-1]
            summary.update({k: v for k, v in last.items() if k.startswith("val_")})
        if dist.main:
            from depthcli.estimators.models import save_model

            save_model(model, Path(cfg.out) / "model", {"trainer": "depthcli train", "global_step": state["global_step"]})
            write_json(Path(cfg.out) / "history.json", state["history"])
            if state["history"]["train"]:
                plot_loss_curve(state["history"], Path(cfg.out) / "loss_curve.png")
                summary["loss_curve"] = str(Path(cfg.out) / "loss_curve.png")
        barrier(dist)
        return summary
    finally:
        if dist.initialized_here:
            import torch.distributed as tdist

            tdist.destroy_process_group()
