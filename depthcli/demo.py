"""``depthcli demo``: the whole tool on synthetic scenes it generates itself, in a few minutes.

Stages (each one a library call the matching command also makes):

1. ``synth``: a procedural room with exact depth, exported as a depth dataset, a
   COLMAP model with a distorted camera and a 7-Scenes-style RGB-D folder;
2. ``convert``: both exports back into depth datasets (sparse SfM depth, metric RGB-D);
3. ``splat-train``: depth-only Gaussian splats (expected depth "ED") on the RGB-D
   conversion, then ``render`` of every view;
4. ``eval``: the renders against the exact depth;
5. ``train`` / ``distill`` / ``predict`` / ``eval``: a small Depth-Anything-style teacher on
   synthetic labels (or a real checkpoint with ``teacher``), pseudo-labels on unlabeled
   images of other rooms, a student on those only; both (and a vertical-ramp baseline)
   scored on held-out rooms; ``overview.png`` and ``errors.png``.

Everything is built in a temporary folder beside ``out`` and renamed into place
when every stage is done: an interrupted demo leaves no half-made ``out``.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from depthcli.console import console, log
from depthcli.errors import DepthcliError


#: Room i of each estimator set is ``synth`` seed ``cfg.seed + offset + i``: sets far apart, so no
#: room is in two sets (nor among the shipped checkpoint's pretraining rooms, seeds 1000000 on).
SEED_OFFSETS = {"labeled": 100_000, "unlabeled": 200_000, "heldout": 300_000}


@dataclass
class DemoConfig:
    out: Path = Path("depthcli-demo")  #: folder for everything the demo writes
    overwrite: bool = False  #: replace an existing demo folder
    width: int = 160  #: synthetic image width of the splat scene (pixels)
    height: int = 120  #: synthetic image height of the splat scene (pixels)
    frames: int = 16  #: frames of the splat scene (every 8th is held out from splat training)
    splat_steps: int = 300  #: Gaussian-splat training steps
    estimators: bool = True  #: run the teacher/student stage
    scenes: int = 64  #: labeled rooms for the teacher (and as many unlabeled rooms for the student)
    scene_frames: int = 2  #: frames per estimator room (many rooms, few views: more variety per image)
    estimator_width: int = 112  #: estimator image width (pixels)
    estimator_height: int = 84  #: estimator image height (pixels)
    #: estimator training crop / input side (multiple of 14; up to twice the images' short side:
    #: 126, tiny-synth's own size, sees the 112x84 rooms upsampled, on a 9x9 token grid)
    estimator_size: int = 126
    estimator_steps: int = 200  #: training steps of the teacher, and of the student
    #: peak learning rate of teacher and student; None: 5e-5 when fine-tuning from ``init`` (from the
    #: shipped tiny-synth, 3e-4 and 1e-4 made the teacher worse than the checkpoint), 1e-3 from scratch
    estimator_lr: float | None = None
    heldout_rooms: int = 8  #: held-out rooms the estimators are scored on
    heldout_frames: int = 2  #: frames per held-out room
    teacher: Path | None = None  #: a local Depth-Anything-V2 checkpoint folder to use as the teacher
    #: checkpoint the teacher is fine-tuned from and the student starts from (a folder, or the
    #: name of one shipped with depthcli); None = both from random weights
    init: str | None = "tiny-synth"
    threads: int = 1  #: torch CPU threads (1 is fastest on small shared CPUs)
    seed: int = 0  #: seed for every stage

    def validate(self) -> None:
        """Refuse nonsense settings with one line, before anything is written."""
        ints = {
            "width": (self.width, 32, 4096), "height": (self.height, 32, 4096), "frames": (self.frames, 2, 10000),
            "splat-steps": (self.splat_steps, 1, 1_000_000), "scenes": (self.scenes, 1, 10000),
            "scene-frames": (self.scene_frames, 1, 10000), "estimator-width": (self.estimator_width, 28, 4096),
            "estimator-height": (self.estimator_height, 28, 4096), "estimator-size": (self.estimator_size, 14, 4096),
            "estimator-steps": (self.estimator_steps, 1, 10_000_000), "heldout-rooms": (self.heldout_rooms, 1, 1000),
            "heldout-frames": (self.heldout_frames, 1, 10000),
            "threads": (self.threads, 1, 1024), "seed": (self.seed, 0, 2**31 - 1),
        }
        for name, (value, lo, hi) in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise DepthcliError(f"--{name} must be a whole number from {lo} to {hi}, got {value!r}")
        if self.estimator_size % 14:
            raise DepthcliError(f"--estimator-size must be a multiple of 14 (the patch size), got {self.estimator_size}",
                                f"e.g. {max(14, self.estimator_size // 14 * 14)}")
        if self.estimator_size > 2 * min(self.estimator_width, self.estimator_height):
            raise DepthcliError(f"--estimator-size {self.estimator_size} is more than twice the estimator images' "
                                f"short side ({self.estimator_width}x{self.estimator_height})")
        if self.estimator_lr is not None and not (
                isinstance(self.estimator_lr, (int, float)) and math.isfinite(self.estimator_lr)
                and 0 < self.estimator_lr <= 1):
            raise DepthcliError(f"--estimator-lr must be a number in (0, 1], got {self.estimator_lr!r}")
        if self.init is not None:
            from depthcli.estimators.models import resolve_checkpoint

            if not (resolve_checkpoint(self.init) / "config.json").is_file():
                raise DepthcliError(f"--init '{self.init}' is neither a model folder nor a shipped checkpoint",
                                    "pass tiny-synth, a depthcli train output's model/ folder, or --from-scratch")
        if self.teacher is not None and not (Path(self.teacher) / "config.json").is_file():
            raise DepthcliError(f"--teacher '{self.teacher}' is not a model folder (no config.json)",
                                "pass a local Depth-Anything-V2-*-hf folder or a depthcli train output's model/")


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux/macOS
        return time.process_time()
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class _Clock:
    """Wall and CPU seconds of each stage."""

    rows: list = field(default_factory=list)
    wall0: float = field(default_factory=time.perf_counter)
    cpu0: float = field(default_factory=_cpu_seconds)

    @contextmanager
    def stage(self, title: str, name: str) -> Iterator[None]:
        console.rule(f"[bold]{title}")
        w, c = time.perf_counter(), _cpu_seconds()
        yield
        self.rows.append([name, round(time.perf_counter() - w, 1), round(_cpu_seconds() - c, 1)])

    def total(self) -> tuple[float, float]:
        return round(time.perf_counter() - self.wall0, 1), round(_cpu_seconds() - self.cpu0, 1)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage into ``cfg.out`` (atomically); return a summary (paths and headline numbers)."""
    from depthcli.convert import ConvertConfig, convert
    from depthcli.io.atomic import atomic_output_dir, check_output_dir, mark_output
    from depthcli.synth.generate import SynthConfig, synthesize

    cfg.validate()
    out = Path(cfg.out)
    check_output_dir(out, cfg.overwrite)
    clock = _Clock()
    summary: dict[str, Any] = {"out": str(out)}
    tables: list = []
    with atomic_output_dir(out, cfg.overwrite) as tmp:
        mark_output(tmp, "demo")
        scene = tmp / "scene"
        with clock.stage("1/5 synth: a procedural room with exact depth", "synth"):
            synthesize(SynthConfig(
                out=scene, frames=cfg.frames, width=cfg.width, height=cfg.height, seed=cfg.seed,
                style="indoor", colmap=True, colmap_camera="OPENCV", rgbd=True, previews=True,
            ))

        with clock.stage("2/5 convert: COLMAP model and RGB-D folder back into depth datasets", "convert"):
            convert(ConvertConfig(source=scene / "colmap", out=tmp / "from_colmap", previews=True))
            convert(ConvertConfig(source=scene / "rgbd", out=tmp / "from_rgbd", previews=True))

        with clock.stage("3/5 splat-train + render: depth-only Gaussian splats (expected depth, ED)", "splat-train + render"):
            from depthcli.splat.render_dataset import render_dataset
            from depthcli.splat.trainer import SplatTrainConfig, train_splats

            splat_summary = train_splats(SplatTrainConfig(
                dataset=tmp / "from_rgbd", out=tmp / "splats", mode="ED", steps=cfg.splat_steps, seed=cfg.seed,
                eval_every=0, checkpoint_every=cfg.splat_steps,
                pose_opt=False, heldout_pose_align=False))  # the synthetic poses are exact: nothing to refine
            render_dataset(tmp / "splats" / "splats.ply", tmp / "from_rgbd", tmp / "renders", mode="ED")
            summary["splat_heldout"] = splat_summary.get("heldout", splat_summary)

        with clock.stage("4/5 eval: rendered depth vs exact depth", "eval (splats)"):
            from depthcli.evaluation import EvalConfig, evaluate

            res = evaluate(EvalConfig(preds=[tmp / "renders"], gt=scene, align="none", workers=1))
            tables.append(("splat renders vs exact depth (metric, no alignment)", res))

        scores: dict[str, float] = {}
        if cfg.estimators:
            scores = _estimator_stage(cfg, tmp, tables, clock)
            summary.update({f"{k}_abs_rel": round(v, 4) for k, v in scores.items()})
            summary["estimator_init"] = cfg.init
        with clock.stage("pictures: overview.png" + (" and errors.png" if cfg.estimators else ""), "pictures"):
            write_overview(tmp, cfg.estimators)
            if cfg.estimators:
                write_errors(tmp)
    summary["overview"] = str(out / "overview.png")
    if cfg.estimators:
        summary["errors"] = str(out / "errors.png")

    from depthcli.console import print_table

    for title, res in tables:
        cols = ["model", "images", "AbsRel", "RMSE", "delta1"]
        rows = [[r["name"], r.get("images", ""), r["metrics"]["abs_rel"], r["metrics"]["rmse"], r["metrics"]["delta1"]]
                for r in res.rows]
        print_table(title, cols, rows)
    if scores:
        _explain_scores(scores, cfg)
    wall, cpu = clock.total()
    print_table(f"time: {wall:.0f} s wall, {cpu:.0f} s CPU (this process and its children)",
                ["stage", "wall s", "CPU s"], clock.rows + [["total", wall, cpu]])
    summary["seconds"] = wall
    summary["cpu_seconds"] = cpu
    log(f"\nEverything is in [bold]{out}[/bold]: scene/ (synthetic truth), from_colmap/ and from_rgbd/ "
        "(converted datasets, previews/), splats/ (splats.ply, metrics.json, curves.png), renders/, "
        + ("estimators/ (rooms, teacher, student, predictions), overview.png and errors.png" if cfg.estimators
           else "overview.png"))
    return summary


def _explain_scores(scores: dict[str, float], cfg: DemoConfig) -> None:
    """Say in words how the estimators compare with the ramp, and what real checkpoints do."""
    ramp, teacher, student = scores["ramp"], scores["teacher"], scores["student"]
    what = f"the checkpoint {cfg.teacher}" if cfg.teacher else (
        f"a {cfg.estimator_steps}-step CPU model trained on {cfg.scenes * cfg.scene_frames} synthetic images"
        + (f", fine-tuned from the checkpoint {cfg.init}" if cfg.init else ", from random weights"))
    log(f"\nOn {cfg.heldout_rooms * cfg.heldout_frames} views of {cfg.heldout_rooms} held-out rooms the teacher ({what}) has AbsRel {teacher:.3f}: {teacher / ramp:.2f} x the "
        f"vertical-ramp baseline ({ramp:.3f}, a guess that knows only that floors are near the bottom of a picture). "
        f"The student, which never saw a depth label, only the teacher's pseudo-labels, has {student:.3f}: "
        f"{student / teacher:.2f} x its teacher.")
    if cfg.init:
        log(f"Both started from the checkpoint {cfg.init} (tiny-synth: pretrained by depthcli on other synthetic "
            "scenes, see its depthcli.json), as Depth-Anything-V2's students start from a pretrained encoder; "
            "[bold]--from-scratch[/bold] trains both from random weights instead.")
    if cfg.teacher is None:
        log("These are tiny models (the Depth-Anything-V2 architecture at ~1/100 of the Small model's size) trained "
            "for about a minute on synthetic rooms. A published Depth-Anything-V2 checkpoint, trained on millions of "
            "images, is far more accurate and works on real photos: download one (e.g. Depth-Anything-V2-Small-hf) "
            "and run [bold]depthcli demo --teacher FOLDER[/bold] to score it on the same room and distill it into "
            "the tiny student (nothing is downloaded by depthcli). Expect its AbsRel well below the tiny teacher's, "
            "and the CPU student to fall short of it: the student's size, not the labels, then limits it.")


def _estimator_stage(cfg: DemoConfig, out: Path, tables: list, clock: _Clock) -> dict[str, float]:
    """Teacher on synthetic labels -> pseudo-labels on other images -> student; evaluate both and a ramp."""
    from depthcli.estimators.distill import DistillConfig, distill
    from depthcli.estimators.predict import PredictConfig, predict
    from depthcli.estimators.training import TrainConfig, train_estimator
    from depthcli.evaluation import EvalConfig, evaluate
    from depthcli.synth.generate import SynthConfig, synthesize

    data = out / "estimators"
    size = dict(width=cfg.estimator_width, height=cfg.estimator_height, frames=cfg.scene_frames, style="indoor")
    with clock.stage("5/5 synth: labeled rooms (teacher), unlabeled rooms (student), held-out rooms", "synth (estimators)"):
        # Labeled rooms for the teacher, unlabeled images of other rooms for the student,
        # and held-out rooms neither has seen (room i of a set is made from seed + i: the
        # sets' seeds are far apart, so no room is in two sets).
        if cfg.teacher is None:
            synthesize(SynthConfig(out=data / "labeled", scenes=cfg.scenes,
                                   seed=cfg.seed + SEED_OFFSETS["labeled"], **size))
        synthesize(SynthConfig(out=data / "unlabeled", scenes=cfg.scenes,
                               seed=cfg.seed + SEED_OFFSETS["unlabeled"], **size))
        synthesize(SynthConfig(out=data / "heldout_rooms", scenes=cfg.heldout_rooms, seed=cfg.seed + SEED_OFFSETS["heldout"],
                               **{**size, "frames": cfg.heldout_frames}))
        _merge_rooms(data / "heldout_rooms", data / "heldout")
    # A light gradient-matching term (SSI : GM = 1 : 0.5 instead of 1 : 2): at this budget the
    # rooms' layout matters more than sharp edges. Median alignment keeps the output's sign
    # (larger = nearer); lstsq alignment would let a model learn depth order instead.
    lr = cfg.estimator_lr if cfg.estimator_lr is not None else 1e-3 if cfg.init is None else 5e-5
    common = dict(preset="tiny", size=cfg.estimator_size, epochs=100000, batch_size=8, lr=lr,
                  max_steps=cfg.estimator_steps, threads=cfg.threads, seed=cfg.seed,
                  checkpoint_every=cfg.estimator_steps, quiet=False, grad_weight=0.5)
    init = None
    if cfg.init is not None:
        from depthcli.estimators.models import resolve_checkpoint

        init = resolve_checkpoint(cfg.init)
    if cfg.teacher is None:
        with clock.stage("5/5 train: the teacher on synthetic depth labels", "train (teacher)"):
            teacher = Path(train_estimator(TrainConfig(
                datasets=[data / "labeled"], out=data / "teacher", val_fraction=0.0, init=init, **common))["model"])
    else:
        teacher = Path(cfg.teacher)
    label_size = None if cfg.teacher is None else 14 * max(1, round(2 * cfg.estimator_height / 14))
    with clock.stage("5/5 distill: pseudo-labels on unlabeled rooms, a student trained on them only", "distill (student)"):
        # The student never sees a synthetic label: only the teacher's pseudo-labels on these images.
        student = Path(distill(DistillConfig(
            teachers=[teacher], images=data / "unlabeled", out=data / "student", label_size=label_size,
            init=init, **common))["model"])
    with clock.stage("5/5 predict + eval: teacher, student and a vertical ramp on held-out rooms", "predict + eval"):
        preds = []
        models = [("teacher", teacher), ("student", student)]
        if init is not None:  # the starting point as shipped, so the table shows what fine-tuning added
            models.append(("pretrained", init))
        for name, model in models:
            predict(PredictConfig(model=model, images=data / "heldout" / "images", out=data / f"pred_{name}",
                                  size=label_size if name == "teacher" else cfg.estimator_size if name == "pretrained"
                                  else None, threads=cfg.threads))
            preds.append(data / f"pred_{name}")
        preds.append(_ramp_baseline(data / "heldout", data / "pred_ramp"))
        res = evaluate(EvalConfig(preds=preds, gt=data / "heldout", align="lstsq-disparity", pred_kind="disparity",
                                  workers=1))
    tables.append(("estimators on held-out rooms (affine-invariant disparity, lstsq-disparity alignment)", res))
    scores = {}
    for r in res.rows:
        scores[str(r["name"]).removeprefix("pred_")] = float(r["metrics"]["abs_rel"])
    return scores


def _merge_rooms(rooms: Path, out: Path) -> Path:
    """One dataset holding every frame of a folder of single-room datasets (``ROOM-FRAME`` names)."""
    from depthcli.estimators.data import find_datasets
    from depthcli.io.atomic import atomic_output_dir
    from depthcli.io.dataset import DatasetWriter, load_dataset

    with atomic_output_dir(out) as tmp:
        writer = DatasetWriter(tmp, depth_units="m", source={"kind": "synth", "rooms": str(rooms.name)})
        for root in find_datasets([rooms]):
            ds = load_dataset(root)
            for f in ds.frames:
                writer.add_frame(f"{root.name}-{f.name}", ds.read_depth(f), f.K, f.cam_from_world,
                                 image=ds.read_image(f))
        writer.close()
    return out


def _ramp_baseline(gt: Path, out: Path) -> Path:
    """A trivial baseline: disparity growing linearly down the image (floor near, ceiling far)."""
    import numpy as np

    from depthcli.io.atomic import atomic_output_dir
    from depthcli.io.dataset import DatasetWriter, load_dataset

    ds = load_dataset(gt)
    with atomic_output_dir(out) as tmp:
        writer = DatasetWriter(tmp, depth_units="affine", depth_kind="disparity", source={"kind": "baseline", "name": "vertical ramp"})
        for f in ds.frames:
            writer.add_frame(f.name, _ramp(f.height, f.width), f.K, f.cam_from_world)
        writer.close()
    return out


def _ramp(height: int, width: int):
    import numpy as np

    return np.repeat(np.arange(height, dtype=np.float32)[:, None] + 1.0, width, axis=1)


# ----------------------------------------------------------------------------- pictures


def _aligned_depth(pred_disp, gt):
    """A relative disparity map aligned to ``gt`` (scale + shift in disparity, as eval does) -> z-depth (NaN = none)."""
    import numpy as np

    from depthcli.align import align_depth

    valid = np.isfinite(gt) & (gt > 0) & np.isfinite(pred_disp)
    depth, _ = align_depth(pred_disp, gt, valid, method="lstsq-disparity", pred_kind="disparity")
    return np.where(np.isfinite(gt) & (gt > 0), depth, np.nan)


def _heldout_predictions(out: Path, limit: int):
    """``[(name, image, gt, {model: aligned depth})]`` for the first ``limit`` held-out frames."""
    from depthcli.io.dataset import load_dataset

    held = load_dataset(out / "estimators" / "heldout")
    preds = {n: load_dataset(out / "estimators" / f"pred_{n}") for n in ("teacher", "student")}
    rows = []
    for hf in held.frames[:limit]:
        gt = held.read_depth(hf)
        maps = {"ramp": _aligned_depth(_ramp(*gt.shape), gt)}
        for n, ds in preds.items():
            pf = next(p for p in ds.frames if Path(p.name).stem == hf.name or p.name == hf.name)
            maps[n] = _aligned_depth(ds.read_depth(pf), gt)
        rows.append((hf.name, held.read_image(hf), gt, maps))
    return rows


def _nan_invalid(depth):
    import numpy as np

    return np.where(np.isfinite(depth) & (depth > 0), depth, np.nan)


def _save(fig, path: Path) -> None:
    from depthcli.io.atomic import atomic_write

    atomic_write(path, lambda p: fig.savefig(p, format="png"))


def write_overview(out: Path, estimators: bool) -> Path:
    """``out/overview.png`` (1600 px wide): splat depth on a held-out view; estimators on an unseen room."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from depthcli.io.dataset import load_dataset

    gt = load_dataset(out / "scene")
    ren = load_dataset(out / "renders")
    f = gt.frames[0]  # frame 0 is held out from splat training (every 8th frame)
    d_gt = _nan_invalid(gt.read_depth(f))
    rf = next(r for r in ren.frames if r.name == f.name)
    d_ren = _nan_invalid(ren.read_depth(rf))
    nrows = 2 if estimators else 1
    fig, axes = plt.subplots(nrows, 5, figsize=(16, 3.4 * nrows + 0.6), dpi=100, squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    cmap = matplotlib.colormaps["turbo_r"].with_extremes(bad="black")
    lo, hi = np.nanpercentile(d_gt, 1), np.nanpercentile(d_gt, 99)
    axes[0, 0].imshow(gt.read_image(f))
    axes[0, 0].set_title("held-out view (not trained on)")
    axes[0, 1].imshow(d_gt, cmap=cmap, vmin=lo, vmax=hi)
    axes[0, 1].set_title("exact z-depth")
    im = axes[0, 2].imshow(d_ren, cmap=cmap, vmin=lo, vmax=hi)
    axes[0, 2].set_title("splat render (ED)")
    fig.colorbar(im, ax=axes[0, 1:3], shrink=0.9, label="z-depth (m)")
    rel = np.abs(d_ren - d_gt) / d_gt
    err = axes[0, 3].imshow(100 * rel, cmap=matplotlib.colormaps["inferno"].with_extremes(bad="black"), vmin=0, vmax=10)
    axes[0, 3].set_title(f"splat error (AbsRel {np.nanmean(rel):.3f})")
    fig.colorbar(err, ax=axes[0, 3], shrink=0.9, label="|error| / depth (%)")
    axes[0, 4].axis("off")
    axes[0, 4].text(0.0, 0.5, "Top: a synthetic room, its RGB-D export\nconverted back, depth-only Gaussian\n"
                    "splats trained on it and rendered at\na view they never saw (metres, no\nalignment).\n\n"
                    "Bottom: depth estimators on a room\nnone of them saw, each aligned to the\n"
                    "exact depth by one scale and shift\nin disparity (as eval does).\nBlack: no depth.",
                    va="center", fontsize=9.5)
    if estimators:
        name, img, g, maps = _heldout_predictions(out, 1)[0]
        g = _nan_invalid(g)
        lo, hi = np.nanpercentile(g, 1), np.nanpercentile(g, 99)
        axes[1, 0].imshow(img)
        axes[1, 0].set_title("a held-out room")
        axes[1, 1].imshow(g, cmap=cmap, vmin=lo, vmax=hi)
        axes[1, 1].set_title("exact z-depth")
        for ax, key, label in zip(axes[1, 2:], ("ramp", "teacher", "student"),
                                  ("vertical-ramp baseline", "teacher", "student (pseudo-labels only)")):
            im = ax.imshow(maps[key], cmap=cmap, vmin=lo, vmax=hi)
            absrel = np.nanmean(np.abs(maps[key] - g) / g)
            ax.set_title(f"{label}\nAbsRel {absrel:.3f}", fontsize=10)
        fig.colorbar(im, ax=axes[1, :], shrink=0.9, label="z-depth (m)")
    fig.suptitle("depthcli demo: exact depth, splat renders and estimator predictions", fontsize=13)
    path = out / "overview.png"
    _save(fig, path)
    plt.close(fig)
    return path


def write_errors(out: Path, frames: int = 3) -> Path:
    """``out/errors.png``: |error| / depth of the ramp, teacher and student on held-out frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = _heldout_predictions(out, frames)
    fig, axes = plt.subplots(len(rows), 4, figsize=(16, 3.3 * len(rows) + 0.6), dpi=100, squeeze=False, layout="constrained")
    cmap = matplotlib.colormaps["inferno"].with_extremes(bad="black")
    im = None
    for r, (name, img, g, maps) in enumerate(rows):
        g = _nan_invalid(g)
        axes[r, 0].imshow(img)
        axes[r, 0].set_title(name)
        for ax, key in zip(axes[r, 1:], ("ramp", "teacher", "student")):
            rel = np.abs(maps[key] - g) / g
            im = ax.imshow(100 * rel, cmap=cmap, vmin=0, vmax=50)
            ax.set_title(f"{key}: AbsRel {np.nanmean(rel):.3f}")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.6, label="|error| / depth (%), after scale+shift in disparity")
    fig.suptitle("held-out rooms: error of each estimator (black: no depth)", fontsize=13)
    path = out / "errors.png"
    _save(fig, path)
    plt.close(fig)
    return path
