"""Depth-supervised Gaussian splat training (CPU or CUDA), resumable.

``train_splats(SplatTrainConfig(dataset, out))`` fits Gaussians to the depth (and
optionally the images) of a depth dataset and writes the job folder ``out``::

    out/job.json                 # the configuration (marks the folder as a splat-train job)
    out/checkpoints/step_XXXXXX.pt   # last 2 checkpoints (atomic), for --resume
    out/splats.ply               # 3DGS PLY in the dataset's world frame and units
    out/metrics.json             # held-out depth metrics, history, timings
    out/curves.png               # loss and held-out AbsRel / coverage curves

Held-out views (every ``test_every``-th frame) are never trained on. Their depth
metrics are taken on valid ground-truth pixels, in the dataset's units:
``abs_rel = mean |pred - gt| / gt``, ``rmse``, ``delta1 = fraction max(pred/gt,
gt/pred) < 1.25``, all over the pixels the render *covers*, plus ``coverage`` =
fraction of valid GT pixels rendered with alpha > ``min_alpha`` and depth > 0.

Training-pose refinement (``pose_opt``; auto: on for the sources in ``POSE_OPT_SOURCES``,
RGB-D captures whose poses a tracker estimated). Each training camera gets a camera-frame
correction ``exp(xi^)`` (6 numbers, Adam at ``lr_pose``), applied from step ``steps // 4`` on by
moving the splats instead of the camera (:func:`depthcli.splat.pose_align.moved_splats`), so the
splats fit one consistent trajectory instead of blurring its errors. Then:

* held-out cameras (never trained on; their depth unused) are placed in the refined trajectory:
  the recorded pose moved as the world moved for the neighbouring training frames in dataset
  order (the mean of their motions ``V^-1 exp(xi^) V``). The headline ``heldout`` metrics are
  taken there; ``heldout_recorded_poses`` are taken at the recorded poses;
* corrections may drift together (the gauge of joint refinement): ``splats.ply`` is moved by the
  one rigid motion that best explains them (:func:`depthcli.splat.pose_align.common_motion`), so
  it sits in the frame of the recorded poses; ``metrics.json`` lists each training camera's
  correction in that frame and the drift removed.

Determinism: on CPU with a fixed seed, a run interrupted at any checkpoint (even
by ``kill -9``) and continued with ``resume=True`` ends with exactly the
parameters of an uninterrupted run: the checkpoint holds the parameters, Adam
state, densification state, the step, and the torch and numpy RNG states, and
the learning-rate schedule is a pure function of the step.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from depthcli.errors import DepthcliError
from depthcli.splat.render import BACKENDS

MODES = ("D", "ED", "RGB+D", "RGB+ED")
#: Most optimisation steps one run accepts (a schedule, not a memory bound; days on a GPU).
MAX_STEPS = 10**8
# dataset sources (dataset.json "source.kind") whose poses a sensor's tracking estimated (KinectFusion,
# BundleFusion, motion capture): --pose-opt is on for them unless told otherwise. Rendered sets
# have exact poses; SfM poses come bundle-adjusted with the points that supervise the splats.
POSE_OPT_SOURCES = ("7scenes", "tum", "scannet")


@dataclass
class SplatTrainConfig:
    """Everything ``depthcli splat-train`` can set (CLI flags map onto these fields)."""

    dataset: Path  # depth dataset folder (dataset.json); depth_kind must be "z"
    out: Path  # job folder for the PLY, metrics, curves and checkpoints
    mode: str = "ED"  # render mode trained: D, ED (depth only) or RGB+D, RGB+ED (needs images)
    steps: int = 1200  # optimisation steps (one training view per step)
    backend: str = "auto"  # rasteriser backend: auto (cpu on CPU, gsplat on CUDA), cpu (compiled), gsplat (CUDA) or torch
    device: str = "cpu"  # torch device: cpu, cuda, cuda:1, ...
    seed: int = 0  # seeds torch and the view order; fixed seed + CPU = reproducible
    test_every: int = 8  # every N-th frame is held out (never trained on); 0 = no held-out views
    depth_loss: str = "depth"  # named depth terms "l1,pearson:0.1" (splat/losses.py; "depth" = l1, "disparity" = disparity-l1)
    grad_weight: float = 0.5  # weight of the depth-gradient (edge) term
    multiscale_weight: float = 0.5  # weight of the multi-scale (pyramid) depth term
    multiscale_levels: int = 3  # pyramid levels (factors 2, 4, 8)
    coverage_weight: float = 0.1  # weight of mean(1 - alpha) on supervised pixels (keeps ED covering, un-biases D)
    rgb_weight: float = 1.0  # weight of the photometric loss (RGB modes)
    ssim_lambda: float = 0.2  # share of 1 - SSIM in the photometric loss
    lr_means: float = 1.6e-4  # Adam lr of the centres (training frame, scene scale 1), decays to 1 % over the run
    lr_scales: float = 5e-3  # Adam lr of the log scales
    lr_quats: float = 1e-3  # Adam lr of the quaternions
    lr_opacities: float = 5e-2  # Adam lr of the opacity logits
    lr_colors: float = 2.5e-3  # Adam lr of the SH degree-0 colours
    init_opacity: float = 0.5  # opacity of the initial Gaussians
    init_scale: float = 1.0  # initial scale = this x RMS distance to the 3 nearest neighbours
    max_init_points: int = 60000  # the initial cloud is voxel-downsampled to at most this many points
    voxel: Optional[float] = None  # voxel size in world units (None: automatic from max_init_points)
    densify: str = "auto"  # auto (gsplat on CUDA when installed, else torch), gsplat, torch, off
    refine_start: int = 300  # first densification step
    refine_stop: Optional[int] = None  # last densification step (None: 70 % of steps)
    refine_every: int = 100  # steps between densifications
    reset_every: int = 3000  # steps between opacity resets (0: never)
    grow_grad2d: float = 0.0002  # NDC gradient threshold for clone/split
    prune_opa: float = 0.005  # prune below this opacity
    max_gaussians: int = 400000  # no growth beyond this many Gaussians
    min_depth: Optional[float] = None  # target pixels below this depth (dataset units) are ignored, train + eval
    max_depth: Optional[float] = None  # target pixels beyond this depth (dataset units) are ignored, train + eval
    min_alpha: float = 0.5  # a pixel counts as covered (rendered) when its alpha exceeds this
    eval_every: int = 500  # steps between held-out evaluations (0: only at the end)
    pose_opt: Optional[bool] = None  # refine each training camera's pose with the splats (6 numbers per view); None: auto (POSE_OPT_SOURCES)
    pose_opt_start: Optional[int] = None  # steps before the pose corrections start (the splats settle first); None: steps // 4
    lr_pose: float = 1e-3  # Adam lr of the training-pose corrections (radians; training-frame units)
    heldout_pose_align: bool = True  # also report held-out metrics after refining each held-out pose (splat/pose_align.py)
    checkpoint_every: int = 500  # steps between checkpoints (the last step always gets one)
    keep_checkpoints: int = 2  # checkpoints kept on disk
    resume: bool = False  # continue from the newest checkpoint in out
    overwrite: bool = False  # replace an existing job folder
    stop_at: Optional[int] = None  # testing hook: stop after the checkpoint of this step, as if killed
    progress: bool = True  # show a progress bar
    prior: Optional[str] = None  # dense prior dataset (depthcli align output), matched by frame name (splat/prior_term.py)
    prior_loss: str = "l1"  # named terms on the prior ("pearson" for an unaligned prior)
    prior_weight: float = 1.0  # prior weight at the first step ...
    prior_weight_final: float = 0.01  # ... decaying exponentially to this at the last step
    prior_init: bool = True  # seed the initial Gaussians from the prior where the dataset has no depth (aligned priors)
    cpu_threads: Optional[int] = 1  # torch CPU threads while training (1 is fastest for small tensors on a busy machine); None: torch's default
    threads: Optional[int] = None  # threads of the compiled CPU rasteriser (backend cpu); None: all cores

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["dataset"] = str(Path(self.dataset).resolve())  # absolute: a job resumes from any folder
        d["out"] = str(Path(self.out).resolve())
        return d

    def validate(self) -> None:
        """Refuse out-of-range settings (one line each) before anything is read or written."""
        from depthcli.validate import (check_choice, check_depth_range, check_device, check_float, check_int,
                                       check_positive, check_seed)

        check_choice(self.mode, "mode", MODES)
        check_choice(self.backend, "backend", BACKENDS)
        check_device(self.device, allowed=("cpu", "cuda", "mps"), indexed=True)
        from depthcli.splat.losses import parse_depth_loss_spec

        try:
            parse_depth_loss_spec(self.depth_loss)
        except ValueError as exc:
            raise DepthcliError(f"--depth-loss: {exc}") from None
        check_choice(self.densify, "densify strategy", ("auto", "gsplat", "torch", "off"))
        check_int(self.steps, "--steps", min=1, max=MAX_STEPS)
        check_seed(self.seed)
        check_int(self.test_every, "--test-every", min=0)
        check_int(self.max_init_points, "--max-init-points", min=1, max=10**8)
        check_int(self.eval_every, "--eval-every", min=0)
        check_int(self.checkpoint_every, "--checkpoint-every", min=1)
        check_int(self.keep_checkpoints, "keep_checkpoints", min=1)
        check_depth_range(self.min_depth, self.max_depth)
        check_float(self.min_alpha, "min_alpha", min=0.0, max=1.0, max_open=True)
        for name in ("grad_weight", "multiscale_weight", "coverage_weight", "rgb_weight"):
            check_float(getattr(self, name), name, min=0.0)
        check_float(self.ssim_lambda, "ssim_lambda", min=0.0, max=1.0)
        check_float(self.lr_pose, "--lr-pose", min=0.0)
        check_int(self.pose_opt_start, "pose_opt_start", min=0, optional=True)
        check_int(self.multiscale_levels, "multiscale_levels", min=0, max=16)
        for name in ("lr_means", "lr_scales", "lr_quats", "lr_opacities", "lr_colors", "init_scale", "grow_grad2d"):
            check_positive(getattr(self, name), name)
        check_float(self.init_opacity, "init_opacity", min=0.0, max=1.0, min_open=True, max_open=True)
        check_positive(self.voxel, "voxel", optional=True)
        check_int(self.refine_start, "refine_start", min=0)
        check_int(self.refine_stop, "refine_stop", min=0, optional=True)
        check_int(self.refine_every, "refine_every", min=1)
        check_int(self.reset_every, "reset_every", min=0)
        check_float(self.prune_opa, "prune_opa", min=0.0, max=1.0, max_open=True)
        check_int(self.max_gaussians, "max_gaussians", min=1, max=10**9)
        check_int(self.stop_at, "stop_at", min=1, optional=True)
        check_int(self.cpu_threads, "cpu_threads", min=1, max=1024, optional=True)
        check_int(self.threads, "--threads", min=1, max=1024, optional=True)
        if self.prior is not None:
            from depthcli.splat.prior_term import check_prior_settings

            check_prior_settings(self)


# ----------------------------------------------------------------------------- metrics


def depth_metrics(
    pred: np.ndarray, gt: np.ndarray, alpha: np.ndarray | None = None, min_alpha: float = 0.5
) -> dict[str, float]:
    """Depth metrics of one view over valid GT pixels (``gt > 0``), same units for both.

    ``coverage`` = fraction of valid GT pixels that are rendered (``pred > 0`` and,
    when given, ``alpha > min_alpha``); ``abs_rel``, ``rmse`` and ``delta1`` are
    taken over the covered pixels (NaN when none is covered).
    """
    valid = np.isfinite(gt) & (gt > 0)
    covered = valid & np.isfinite(pred) & (pred > 0)
    if alpha is not None:
        covered &= alpha > min_alpha
    n_valid = int(valid.sum())
    out = {"coverage": float(covered.sum() / n_valid) if n_valid else float("nan"), "valid_pixels": n_valid}
    if covered.any():
        from depthcli.metrics import depth_metrics as standard_metrics

        m = standard_metrics(pred, gt, covered)  # the same formulas as `depthcli eval`
        out.update(abs_rel=m["abs_rel"], rmse=m["rmse"], delta1=m["delta1"])
    else:
        out.update(abs_rel=float("nan"), rmse=float("nan"), delta1=float("nan"))
    return out


def mean_metrics(per_view: list[dict[str, float]]) -> dict[str, float]:
    """Mean over views of each metric (views without valid pixels are skipped)."""
    keys = ["abs_rel", "rmse", "delta1", "coverage"]
    out = {}
    for k in keys:
        vals = [m[k] for m in per_view if k in m and np.isfinite(m[k])]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


# ----------------------------------------------------------------------------- data


@dataclass
class _View:
    frame: Any
    depth_world: np.ndarray  # [H, W] float32, dataset units, 0 = invalid (range-filtered)
    image: Optional[np.ndarray]  # [H, W, 3] uint8 or None


def _load_views(cfg: SplatTrainConfig):
    from depthcli.depth import valid_mask
    from depthcli.io.dataset import load_dataset

    ds = load_dataset(Path(cfg.dataset))
    if cfg.mode not in MODES:
        raise DepthcliError(f"unknown mode '{cfg.mode}'", f"use one of {', '.join(MODES)}")
    if ds.depth_kind != "z":
        raise DepthcliError(
            f"dataset '{cfg.dataset}' stores {ds.depth_kind}, splat-train needs z-depth",
            "convert disparity to depth first",
        )
    if len(ds.frames) == 0:
        raise DepthcliError(f"dataset '{cfg.dataset}' has no frames")
    use_rgb = cfg.mode.startswith("RGB")
    if use_rgb and not ds.has_images:
        raise DepthcliError(
            f"mode {cfg.mode} needs images but dataset '{cfg.dataset}' has none", "use --mode ED for depth-only data"
        )
    views = []
    for f in ds.frames:
        d = ds.read_depth(f)  # raises on NaN/Inf and size mismatch
        if cfg.min_depth is not None:
            d[d < cfg.min_depth] = 0
        if cfg.max_depth is not None:
            d[d > cfg.max_depth] = 0
        img = None
        if use_rgb:
            if f.image is None:
                raise DepthcliError(f"frame '{f.name}' has no image but mode {cfg.mode} needs one for every frame")
            img = ds.read_image(f)  # raises on size mismatch
        views.append(_View(f, d, img))
    if not any(valid_mask(v.depth_world).any() for v in views):
        raise DepthcliError(
            f"dataset '{cfg.dataset}' has no valid depth" + (" in the --min/--max-depth range" if cfg.max_depth or cfg.min_depth else ""),
            "splat-train needs depth; check the dataset with depthcli convert",
        )
    if cfg.test_every and cfg.test_every > 0 and len(views) > 1:
        test_ids = [i for i in range(len(views)) if i % cfg.test_every == 0]
    else:
        test_ids = []
    train_ids = [i for i in range(len(views)) if i not in set(test_ids)]
    train_ids = [i for i in train_ids if valid_mask(views[i].depth_world).any()]
    if not train_ids:
        raise DepthcliError("no training frame has valid depth", "lower --test-every or check the dataset")
    return ds, views, train_ids, test_ids


# ----------------------------------------------------------------------------- rendering


def render_depth(splats: dict, viewmat, K, width: int, height: int, mode: str, backend: str):
    """Render one view: returns ``(rgb [H,W,3] | None, depth [H,W], alpha [H,W], meta)`` (torch)."""
    from depthcli.splat.render import render

    colors, alphas, meta = render(
        splats["means"], splats["quats"], splats["scales"], splats["opacities"],
        splats["colors"] if mode.startswith("RGB") else None,
        viewmat[None], K[None], width, height, mode=mode, backend=backend,
    )
    rgb = colors[0, ..., :3] if mode.startswith("RGB") else None
    depth = colors[0, ..., -1]
    return rgb, depth, alphas[0, ..., 0], meta


# ----------------------------------------------------------------------------- job folder


def _prepare_out(cfg: SplatTrainConfig, stack) -> Path:
    """Lock the job folder for this run (``stack`` holds it); a fresh job gets depthcli's marker.

    A fresh job that fails before its first checkpoint is removed again.
    """
    from depthcli.io.atomic import job_output_dir

    return stack.enter_context(job_output_dir(
        Path(cfg.out), "splat-train", resume=cfg.resume, overwrite=cfg.overwrite, inputs=[cfg.dataset],
        keep=lambda out: bool(_checkpoints(out))))


def _load_checkpoint(out: Path) -> dict:
    """The newest readable checkpoint of a job (tensors and plain data only, never code)."""
    from depthcli.io.checkpoint import load_tensors_only
    from depthcli.io.paths import resolve_inside

    folder = Path(out) / "checkpoints"
    ckpts = _checkpoints(out)
    if not ckpts:
        raise DepthcliError(f"--resume: no checkpoint in '{folder}'", "start without --resume (or check the folder)")
    for path in reversed(ckpts):
        path = resolve_inside(folder, path.name, f"checkpoint '{path}'")
        try:
            return load_tensors_only(path)  # refuses anything but tensors and plain data
        except DepthcliError:
            raise
        except Exception:  # noqa: BLE001 - a damaged file: fall back to the previous checkpoint
            continue
    raise DepthcliError(f"--resume: no readable checkpoint in '{folder}'", "start again with --overwrite")


def _checkpoints(out: Path) -> list[Path]:
    folder = Path(out) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step_*.pt") if p.stem[5:].isdigit())


# ----------------------------------------------------------------------------- training


def _make_optimizers(params, cfg: SplatTrainConfig) -> dict:
    import torch

    lrs = {"means": cfg.lr_means, "scales": cfg.lr_scales, "quats": cfg.lr_quats,
           "opacities": cfg.lr_opacities, "sh0": cfg.lr_colors}
    if torch.device(cfg.device).type == "cpu":  # same arithmetic and state layout, without importing torch.optim
        from depthcli.splat.optim import Adam
    else:
        Adam = torch.optim.Adam
    return {k: Adam([{"params": [p], "lr": lrs[k], "name": k}], eps=1e-15) for k, p in params.items()}


def _make_strategy(cfg: SplatTrainConfig, backend_used: str):
    refine_stop = cfg.refine_stop if cfg.refine_stop is not None else int(0.7 * cfg.steps)
    kind = cfg.densify
    if kind == "auto":
        kind = "torch"
        if cfg.device.startswith("cuda") and backend_used != "torch":
            try:
                import gsplat  # noqa: F401

                kind = "gsplat"
            except ImportError:
                pass
    if kind == "off":
        return None, "off"
    if kind == "gsplat":
        try:
            from gsplat.strategy import DefaultStrategy
        except ImportError:
            raise DepthcliError("--densify gsplat needs gsplat", "pip install 'depthcli[cuda]' or use --densify torch") from None
        return DefaultStrategy(
            prune_opa=cfg.prune_opa, grow_grad2d=cfg.grow_grad2d, refine_start_iter=cfg.refine_start,
            refine_stop_iter=refine_stop, refine_every=cfg.refine_every, reset_every=cfg.reset_every or 10**9,
        ), "gsplat"
    if kind != "torch":
        raise DepthcliError(f"unknown densify strategy '{cfg.densify}'", "use auto, gsplat, torch or off")
    from depthcli.splat.densify import TorchDensifyStrategy

    return TorchDensifyStrategy(
        prune_opa=cfg.prune_opa, grow_grad2d=cfg.grow_grad2d, refine_start=cfg.refine_start,
        refine_stop=refine_stop, refine_every=cfg.refine_every, reset_every=cfg.reset_every,
        max_gaussians=cfg.max_gaussians,
    ), "torch"


def _resolve_backend(cfg: SplatTrainConfig) -> str:
    import torch

    from depthcli.splat.render import resolve_backend

    return resolve_backend(cfg.backend, torch.device(cfg.device))


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DepthcliError(f"device '{device}' requested but CUDA is not available", "use --device cpu")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise DepthcliError(f"unknown device '{device}'", "use cpu or cuda")


def train_splats(cfg: SplatTrainConfig) -> dict[str, Any]:
    """Train Gaussians on ``cfg.dataset``; write ``cfg.out``; return a summary dict.

    The summary holds the held-out metrics (``heldout``: mean ``abs_rel``, ``rmse``,
    ``delta1``, ``coverage`` in dataset units, at the dataset's poses; with
    ``heldout_pose_align`` also ``heldout_pose_aligned``, after each held-out camera's pose
    is fitted to its own depth), Gaussian count, timings and paths.
    """
    from contextlib import ExitStack

    from depthcli.errors import after_disk_full
    from depthcli.splat.backend_cpu import raster_threads

    cfg.validate()
    try:
        with torch_threads(cfg.cpu_threads, cfg.device), raster_threads(cfg.threads, cfg.device), ExitStack() as stack:
            return _train(cfg, stack)
    except Exception as exc:
        after_disk_full(exc, cfg.out, "splat-train")
        raise


@contextmanager
def torch_threads(n: Optional[int], device: str):
    """Run with ``n`` torch CPU threads (restored afterwards); no-op for None or CUDA.

    The torch rasteriser works on many small tensors: on a shared 2-core machine one
    thread was ~15x faster than two (thread hand-off dominates).
    """
    import torch

    if not n or str(device).startswith("cuda"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(cfg: SplatTrainConfig, stack) -> dict[str, Any]:
    import torch

    from depthcli.console import log
    from depthcli.depth import valid_mask
    from depthcli.io.atomic import atomic_write, atomic_write_text
    from depthcli.splat import model as M
    from depthcli.splat.losses import DepthSupervision, parse_depth_loss_spec, rgb_loss
    from depthcli.splat.pose_align import (
        common_motion, mean_motion, moved_splats, rigidly_moved, rotation_angle_deg, world_motion)
    from depthcli.splat.prior_term import check_prior_settings, load_prior, loss_images

    if cfg.steps < 1:
        raise DepthcliError("--steps must be at least 1")
    _check_device(cfg.device)
    backend = _resolve_backend(cfg)
    try:
        parse_depth_loss_spec(cfg.depth_loss)
    except ValueError as exc:
        raise DepthcliError(f"--depth-loss: {exc}", "e.g. --depth-loss l1 --depth-loss pearson:0.1") from None
    check_prior_settings(cfg)
    strategy, strategy_kind = _make_strategy(cfg, backend)  # validates --densify before anything is written
    ds, views, train_ids, test_ids = _load_views(cfg)
    use_rgb = cfg.mode.startswith("RGB")
    use_pose_opt = pose_opt_on(cfg.pose_opt, ds)
    dev = torch.device(cfg.device)

    # --- state: fresh or from a checkpoint (validated before anything is written)
    ckpt = None
    prior = load_prior(cfg, ds, views, train_ids, None, None)  # validated before the checkpoint is read
    if cfg.resume:
        from depthcli.io.atomic import check_no_overlap, check_resumable
        from depthcli.validate import check_float, check_int, check_positive

        check_no_overlap([cfg.dataset], [cfg.out])
        check_resumable(Path(cfg.out), "splat-train")
        ckpt = _load_checkpoint(Path(cfg.out))
        old = dict(ckpt["config"])
        same = lambda k: (Path(old[k]).resolve() == Path(cfg.dataset).resolve()) if k == "dataset" else (  # noqa: E731
            str(old[k]) == str(getattr(cfg, k)))
        if pose_opt_on(old.get("pose_opt", False), ds) != use_pose_opt:  # (checkpoints before --pose-opt: without)
            raise DepthcliError(f"--resume: the checkpoint was trained {'with' if not use_pose_opt else 'without'} "
                                "training-pose refinement", "resume with the same --pose-opt setting")
        for key in ("mode", "seed", "test_every", "dataset"):
            if not same(key):
                raise DepthcliError(
                    f"--resume: the checkpoint was trained with {key}={old[key]}, not {getattr(cfg, key)}",
                    "resume with the same settings",
                )
        norm = M.SceneNorm.from_json(ckpt["norm"])
        check_positive(norm.scale, "--resume: the checkpoint's scene scale", hint="start again with --overwrite")
        for c in np.ravel(norm.center):
            check_float(float(c), "--resume: the checkpoint's scene centre", hint="start again with --overwrite")
        load_prior(cfg, ds, views, train_ids, ckpt["config"], ckpt.get("prior"))  # --resume: same prior
        init_info = ckpt["init_info"]
    else:
        norm = M.scene_norm_from([views[i].frame for i in train_ids], [views[i].depth_world for i in train_ids])
        init_depths = [views[i].depth_world for i in train_ids]
        if prior is not None and cfg.prior_init and prior.metric:
            init_depths = prior.init_depths(views, train_ids)
        points, colors, init_info = M.gather_init_points(
            ds, [views[i].frame for i in train_ids], init_depths,
            [views[i].image for i in train_ids] if use_rgb else None, cfg.max_init_points, cfg.voxel,
        )
    if prior is not None:
        prior.prepare(norm.scale, cfg.device)
    out = _prepare_out(cfg, stack)
    for stale in (out / "checkpoints").glob(".step_*"):  # temp files of a write killed midway
        stale.unlink(missing_ok=True)
    if not cfg.resume:
        atomic_write_text(out / "job.json", json.dumps({"kind": "depthcli splat-train", "config": cfg.to_json()}, indent=1))

    torch.manual_seed(cfg.seed)
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    if ckpt is None:
        params = M.create_params(norm.points_to_norm(points), colors, cfg.init_opacity, cfg.init_scale, cfg.device)
        if use_rgb and "sh0" not in params:  # images exist but no colours sampled (should not happen)
            params["sh0"] = torch.nn.Parameter(torch.zeros_like(params["means"]))
    else:
        params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.to(dev)) for k, v in ckpt["params"].items()})
    optimizers = _make_optimizers(params, cfg)
    pose_xi, pose_optim = None, None
    pose_start = cfg.pose_opt_start if cfg.pose_opt_start is not None else cfg.steps // 4
    if use_pose_opt:  # one camera-frame correction per view (se(3) twist); held-out views never get one
        if dev.type == "cpu":  # as _make_optimizers: the same arithmetic without importing torch._dynamo
            from depthcli.splat.optim import Adam as PoseAdam
        else:
            PoseAdam = torch.optim.Adam
        pose_xi = [torch.zeros(6, dtype=torch.float32, device=dev, requires_grad=True) for _ in views]
        pose_optim = PoseAdam([{"params": pose_xi, "lr": cfg.lr_pose}], eps=1e-15)
    if strategy is not None:
        strategy.check_sanity(params, optimizers)
        strategy_state = strategy.initialize_state(scene_scale=1.0)  # the training frame has unit scale
    start_step = 0
    history: list[dict] = []
    elapsed_before = 0.0
    if ckpt is not None:
        for k, opt in optimizers.items():
            try:
                opt.load_state_dict(ckpt["optimizers"][k])
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise DepthcliError(f"--resume: the checkpoint's optimizer state for '{k}' does not fit ({exc})",
                                    "start again with --overwrite") from None
        if strategy is not None and ckpt.get("strategy_state") is not None:
            strategy_state = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in ckpt["strategy_state"].items()}
        torch.set_rng_state(ckpt["rng"]["torch"])
        if dev.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], dev)
        rng.bit_generator.state = ckpt["rng"]["numpy"]
        if pose_xi is not None:
            saved = ckpt.get("pose_xi")
            if saved is None or tuple(saved.shape) != (len(views), 6):
                raise DepthcliError("--resume: the checkpoint has no training-pose corrections for these views",
                                    "resume with the same settings")
            with torch.no_grad():
                for k, x in enumerate(pose_xi):
                    x.copy_(saved[k])
            pose_optim.load_state_dict(ckpt["pose_optimizer"])
        start_step = check_int(ckpt["step"], "--resume: the checkpoint's step", min=0, max=MAX_STEPS)
        history = list(ckpt["history"])
        elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        log(f"resuming from step {start_step} ({len(params['means'])} Gaussians)")

    # --- training-frame tensors (depth in training units)
    def cam(frame):
        vm = torch.tensor(norm.viewmat_to_norm(frame.cam_from_world), dtype=torch.float32, device=dev)
        K = torch.tensor(frame.K, dtype=torch.float32, device=dev)
        return vm, K

    targets = {}
    for i in train_ids:
        v = views[i]
        d = torch.tensor(v.depth_world / norm.scale, dtype=torch.float32, device=dev)
        rgb = torch.tensor(v.image, dtype=torch.float32, device=dev) / 255.0 if use_rgb else None
        targets[i] = (d, d > 0, rgb, *cam(v.frame))
    cov_w = cfg.coverage_weight
    depth_sup = DepthSupervision(cfg.depth_loss, cfg.grad_weight, cfg.multiscale_weight, cfg.multiscale_levels, cov_w)
    edge_images = loss_images(ds, views, train_ids, dev) if depth_sup.needs_image else {}

    def placed(i: int, vm):
        """Held-out camera ``i`` in the refined trajectory (``--pose-opt``): its recorded pose moved as
        the world moved for its neighbouring training frames (dataset order); its own depth is not used."""
        W = mean_motion([world_motion(cam(views[j].frame)[0].cpu().numpy(), pose_xi[j].detach().cpu().numpy())
                         for j in neighbour_train_ids(i, train_ids)])
        vm_placed = torch.tensor(vm.cpu().numpy().astype(np.float64) @ W, dtype=torch.float32, device=dev)
        return vm_placed, W

    def evaluate(align_poses: bool = False, drift=None) -> dict[str, Any]:
        """Held-out metrics. Without ``pose_opt``: at the dataset's poses. With it: at the poses the
        refined trajectory places them (headline), and also at the dataset's poses with the splats
        moved back by the common drift (``recorded_poses``, what rendering ``splats.ply`` at the
        dataset's poses gives). ``align_poses``: also after refining each held-out pose against
        its own depth, splats frozen (``pose_aligned``), starting from the headline's pose.
        ``drift``: the corrections' common motion ``(R, t)`` when already computed."""
        per_view, aligned, recorded = [], [], []
        with torch.no_grad():
            act = {k: (v.detach() if v is not None else None) for k, v in M.activated(params).items()}
            gauged = rigidly_moved(act, *(drift or gauge())) if pose_xi is not None else None

        def score(splats, vm, K, v):
            with torch.no_grad():
                _, depth, alpha, _ = render_depth(splats, vm, K, v.frame.width, v.frame.height, cfg.mode, backend)
            pred = depth.cpu().numpy().astype(np.float64) * norm.scale
            m = depth_metrics(pred, v.depth_world, alpha.cpu().numpy(), cfg.min_alpha)
            m["frame"] = v.frame.name
            return m

        for i in test_ids:
            v = views[i]
            if not valid_mask(v.depth_world).any():
                continue
            vm, K = cam(v.frame)
            if pose_xi is not None:
                recorded.append(score(gauged, vm, K, v))
                vm, W = placed(i, vm)
            m = score(act, vm, K, v)
            if pose_xi is not None:
                m.update(placement_rotation_deg=rotation_angle_deg(W[:3, :3]),
                         placement_translation=float(np.linalg.norm(W[:3, 3])) * norm.scale)
            per_view.append(m)
            if align_poses:
                aligned.append(_pose_aligned_metrics(act, v, vm, K, norm, cfg, backend))
        out = {"mean": mean_metrics(per_view), "per_view": per_view}
        if recorded:
            out["recorded_poses"] = {"mean": mean_metrics(recorded), "per_view": recorded}
        if align_poses:
            out["pose_aligned"] = {"mean": mean_metrics(aligned), "per_view": aligned}
        return out

    def save_checkpoint(step: int, elapsed: float) -> None:
        rng_state = {"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state,
                     "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
        obj = {
            "step": step, "config": cfg.to_json(), "norm": norm.to_json(), "init_info": init_info,
            "params": {k: p.detach().cpu() for k, p in params.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "strategy_state": None if strategy is None else {
                k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in strategy_state.items()},
            "rng": rng_state, "history": history, "elapsed_s": elapsed,
            "order": list(order),  # the rest of the current epoch's view order
            "prior": None if prior is None else prior.state(),
            "pose_xi": None if pose_xi is None else torch.stack([x.detach().cpu() for x in pose_xi]),
            "pose_optimizer": None if pose_optim is None else pose_optim.state_dict(),
        }
        atomic_write(out / "checkpoints" / f"step_{step:06d}.pt", lambda p: torch.save(obj, p))
        for old in _checkpoints(out)[: -max(cfg.keep_checkpoints, 1)]:
            old.unlink(missing_ok=True)

    def gauge():
        """The common drift of the training-pose corrections (splat/pose_align.py: common_motion)."""
        means = params["means"].detach().cpu().numpy()
        sub = means[:: max(1, len(means) // 20000)]
        return common_motion(sub, [(cam(views[i].frame)[0].cpu().numpy(), pose_xi[i].detach().cpu().numpy())
                                   for i in train_ids])

    order: list[int] = []
    if ckpt is not None:
        order = list(ckpt.get("order", []))
    t0 = time.perf_counter()
    last_loss = float("nan")
    info_text = ""
    steps_done = 0
    with _maybe_progress(cfg.progress, "splat-train", cfg.steps) as (bar, task):
        if bar is not None and start_step:
            bar.update(task, completed=start_step)
        for step in range(start_step + 1, cfg.steps + 1):
            if not order:
                order = [train_ids[j] for j in rng.permutation(len(train_ids))]
            i = order.pop()
            d_t, mask, rgb_t, vm, K = targets[i]
            frame = views[i].frame
            lr_means = cfg.lr_means * (0.01 ** ((step - 1) / max(cfg.steps - 1, 1)))
            for g in optimizers["means"].param_groups:
                g["lr"] = lr_means
            act = M.activated(params)
            if pose_xi is not None and step > pose_start:
                act = moved_splats(act, pose_xi[i], vm)  # seen from vm: the splats from the corrected camera
            rgb, depth, alpha, meta = render_depth(act, vm, K, frame.width, frame.height, cfg.mode, backend)
            info = dict(meta)
            info.update(width=frame.width, height=frame.height, n_cameras=1)
            if strategy is not None:
                strategy.step_pre_backward(params, optimizers, strategy_state, step, info)
            loss, parts = depth_sup(depth, d_t, mask, alpha, image=edge_images.get(i))
            if prior is not None:
                loss = prior.add(loss, parts, i, step, depth, alpha)
            if use_rgb:
                l_rgb = cfg.rgb_weight * rgb_loss(rgb, rgb_t, cfg.ssim_lambda)
                loss = loss + l_rgb
                parts["rgb"] = float(l_rgb.detach())
            loss.backward()
            for opt in optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            if pose_optim is not None:
                pose_optim.step()
                pose_optim.zero_grad(set_to_none=True)
            if strategy is not None:
                if strategy_kind == "gsplat":
                    strategy.step_post_backward(params, optimizers, strategy_state, step, info, packed=False)
                else:
                    strategy.step_post_backward(params, optimizers, strategy_state, step, info)
            last_loss = float(loss.detach())
            if not math.isfinite(last_loss):
                raise DepthcliError(f"training diverged at step {step} (loss is {last_loss})",
                                    "lower the learning rates or check the dataset's depth")
            steps_done += 1
            rec: dict[str, Any] = {"step": step, "loss": last_loss, "gaussians": int(params["means"].shape[0]), **parts}
            if test_ids and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                rec["heldout"] = evaluate()["mean"]
            if step % 10 == 0 or "heldout" in rec or step == cfg.steps:
                history.append(rec)
            if bar is not None:
                rate = steps_done / max(time.perf_counter() - t0, 1e-9)
                info_text = f"loss {last_loss:.4f}  {rec['gaussians']} gaussians  {rate:.1f} steps/s"
                if "heldout" in rec:
                    info_text += f"  absrel {rec['heldout']['abs_rel']:.4f}"
                bar.update(task, advance=1, info=info_text)
            if step % max(cfg.checkpoint_every, 1) == 0 or step == cfg.steps or step == cfg.stop_at:
                save_checkpoint(step, elapsed_before + time.perf_counter() - t0)
            if cfg.stop_at is not None and step == cfg.stop_at and step < cfg.steps:
                return {"interrupted_at": step, "out": str(out)}
    train_s = elapsed_before + time.perf_counter() - t0
    final_step = max(start_step, cfg.steps)

    # --- final outputs (each file atomic), in the dataset's world frame and units
    from depthcli.io.ply import write_splats_ply

    if test_ids and cfg.heldout_pose_align:
        log(f"aligning the {len(test_ids)} held-out cameras to their depth (splats frozen) ...")
    common = gauge() if pose_xi is not None else None  # computed once: the figures and splats.ply share it
    result = evaluate(align_poses=cfg.heldout_pose_align, drift=common) if test_ids else {"mean": {}, "per_view": []}
    if pose_xi is not None:  # splats.ply in the frame of the recorded poses (the last checkpoint keeps them as trained)
        G_R, G_t = common
        G = np.eye(4)
        G[:3, :3], G[:3, 3] = G_R, G_t
        drift_removed = {"rotation_deg": rotation_angle_deg(G_R), "translation": float(np.linalg.norm(G_t)) * norm.scale}
        train_corrections = []
        for i in train_ids:
            V = cam(views[i].frame)[0].cpu().numpy().astype(np.float64)
            C = V @ world_motion(V, pose_xi[i].detach().cpu().numpy()) @ np.linalg.inv(G) @ np.linalg.inv(V)
            train_corrections.append({"frame": views[i].frame.name, "rotation_deg": rotation_angle_deg(C[:3, :3]),
                                      "translation": float(np.linalg.norm(C[:3, 3])) * norm.scale})
        moved = rigidly_moved({"means": params["means"].detach(), "quats": params["quats"].detach()}, G_R, G_t)
        with torch.no_grad():
            params["means"].copy_(moved["means"])
            params["quats"].copy_(moved["quats"])
    arrays = M.params_to_arrays(params, norm, comments=[
        f"depthcli splat-train mode {cfg.mode}", f"depth_units {ds.depth_units}", f"dataset {Path(cfg.dataset).name}"])
    atomic_write(out / "splats.ply", lambda p: write_splats_ply(p, arrays))
    summary: dict[str, Any] = {
        "out": str(out),
        "splats": str(out / "splats.ply"),
        "mode": cfg.mode,
        "backend": backend,
        "device": cfg.device,
        "densify": strategy_kind,
        "pose_opt": use_pose_opt,
        "steps": final_step,
        "gaussians": int(params["means"].shape[0]),
        "train_frames": len(train_ids),
        "heldout_frames": len(test_ids),
        "depth_units": ds.depth_units,
        "heldout": result["mean"],
        **({"heldout_recorded_poses": result["recorded_poses"]["mean"]} if "recorded_poses" in result else {}),
        **({"heldout_pose_aligned": result["pose_aligned"]["mean"]} if "pose_aligned" in result else {}),
        "final_loss": last_loss,
        "train_seconds": round(train_s, 2),
        "steps_per_second": round(steps_done / max(time.perf_counter() - t0, 1e-9), 2) if steps_done else None,
        "init": init_info,
        **({"prior": prior.summary()} if prior is not None else {}),
        "scene_norm": norm.to_json(),
    }
    metrics = dict(summary)
    metrics["heldout_per_view"] = result["per_view"]
    if "recorded_poses" in result:
        metrics["heldout_recorded_poses_per_view"] = result["recorded_poses"]["per_view"]
    if "pose_aligned" in result:
        metrics["heldout_pose_aligned_per_view"] = result["pose_aligned"]["per_view"]
    if pose_xi is not None:  # each training camera's correction in splats.ply's frame, and the common drift removed
        metrics["train_pose_corrections"] = train_corrections
        metrics["pose_drift_removed"] = drift_removed
    metrics["history"] = history
    metrics["config"] = cfg.to_json()
    atomic_write_text(out / "metrics.json", json.dumps(_finite(metrics), indent=1))
    try:
        _plot_curves(out / "curves.png", history, atomic_write)
        summary["curves"] = str(out / "curves.png")
    except Exception as exc:  # a plot must never fail a finished training
        from depthcli.console import warn

        warn(f"could not draw curves.png: {exc}")
    return summary


def _pose_aligned_metrics(act: dict, view, vm, K, norm, cfg: SplatTrainConfig, backend: str) -> dict[str, Any]:
    """Metrics of one held-out view after :func:`depthcli.splat.pose_align.align_camera`
    (training frame inside; the correction's translation reported in dataset units)."""
    import torch

    from depthcli.splat.pose_align import align_camera

    dev = vm.device

    def render_fn(splats, viewmat, K_, w, h):
        splats = {k: (v.to(dev) if v is not None else None) for k, v in splats.items()}
        _, depth, alpha, _ = render_depth(splats, viewmat.to(dev), K_.to(dev), w, h, cfg.mode, backend)
        return depth.cpu(), alpha.cpu()

    fr = view.frame
    target = (view.depth_world / norm.scale).astype(np.float32)
    cpu_splats = {k: (v.cpu() if v is not None else None) for k, v in act.items()}
    res = align_camera(render_fn, cpu_splats, vm.cpu().numpy(), K.cpu().numpy(), fr.width, fr.height, target,
                       min_alpha=cfg.min_alpha)
    with torch.no_grad():
        vm2 = torch.tensor(res.cam_from_world, dtype=torch.float32, device=vm.device)
        _, depth, alpha, _ = render_depth(act, vm2, K, fr.width, fr.height, cfg.mode, backend)
    m = depth_metrics(depth.cpu().numpy().astype(np.float64) * norm.scale, view.depth_world, alpha.cpu().numpy(),
                      cfg.min_alpha)
    m.update(frame=fr.name, rotation_deg=res.rotation_deg, translation=res.translation * norm.scale)
    return m


def pose_opt_on(value: Optional[bool], ds) -> bool:
    """``--pose-opt`` resolved: ``None`` (auto) is on for datasets converted from POSE_OPT_SOURCES."""
    if value is not None:
        return bool(value)
    source = ds.source if isinstance(getattr(ds, "source", None), dict) else {}
    return source.get("kind") in POSE_OPT_SOURCES


def neighbour_train_ids(i: int, train_ids: list[int]) -> list[int]:
    """The training views next to view ``i`` in dataset order: the nearest before and after it
    (one at either end of the sequence)."""
    before = [j for j in train_ids if j < i]
    after = [j for j in train_ids if j > i]
    return ([before[-1]] if before else []) + ([after[0]] if after else [])


def _finite(value):
    """JSON-safe copy: NaN/Inf floats become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _finite(value.item())
    return value


class _NullBar:
    def __enter__(self):
        return None, None

    def __exit__(self, *exc):
        return False


def _maybe_progress(enabled: bool, description: str, total: int):
    from depthcli.console import progress_task

    return progress_task(description, total) if enabled else _NullBar()


def _plot_curves(path: Path, history: list[dict], atomic_write) -> None:
    from depthcli.splat.curves import write_curves

    write_curves(path, history, atomic_write)
