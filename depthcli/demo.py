"""``depthcli demo``: the whole tool on a synthetic scene it generates itself.

Stages (each one a library call the matching command also makes):

1. ``synth``: a procedural room with exact depth, exported as a depth dataset, a
   COLMAP model with a distorted camera and a 7-Scenes-style RGB-D folder;
2. ``convert``: both exports back into depth datasets (sparse SfM depth, metric RGB-D);
3. ``splat-train``: depth-only Gaussian splats (expected depth "ED") on the RGB-D
   conversion, then ``render`` of every view;
4. ``eval``: the renders against the exact depth;
5. ``train`` / ``distill`` / ``predict`` / ``eval``: a tiny Depth-Anything-style teacher on
   synthetic labels, pseudo-labels on unlabeled images of other scenes, a student on those
   only, both (and a vertical-ramp baseline) scored on a held-out scene; an overview picture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthcli.console import console, log


@dataclass
class DemoConfig:
    out: Path = Path("depthcli-demo")  #: folder for everything the demo writes
    overwrite: bool = False  #: replace an existing demo folder
    width: int = 160  #: synthetic image width (pixels)
    height: int = 120  #: synthetic image height (pixels)
    frames: int = 24  #: frames of the main synthetic scene
    splat_steps: int = 1000  #: Gaussian-splat training steps
    estimators: bool = True  #: run the teacher/student stage
    scenes: int = 16  #: synthetic scenes for the teacher (and as many unlabeled ones for the student)
    estimator_steps: int = 1000  #: training steps of the teacher, and of the student
    threads: int = 1  #: torch CPU threads (1 is fastest on small shared CPUs)
    seed: int = 0  #: seed for every stage


def _stage(title: str) -> None:
    console.rule(f"[bold]{title}")


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage into ``cfg.out``; return a summary (paths and headline numbers)."""
    from depthcli.convert import ConvertConfig, convert
    from depthcli.errors import DepthcliError
    from depthcli.io.atomic import check_output_dir, mark_output
    from depthcli.synth.generate import SynthConfig, synthesize

    out = Path(cfg.out)
    check_output_dir(out, cfg.overwrite)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    mark_output(out, "demo")
    t0 = time.time()
    summary: dict[str, Any] = {"out": str(out)}

    _stage("1/5 synth: a procedural scene with exact depth")
    scene = out / "scene"
    synthesize(
        SynthConfig(
            out=scene, frames=cfg.frames, width=cfg.width, height=cfg.height, seed=cfg.seed,
            style="indoor", colmap=True, colmap_camera="OPENCV", rgbd=True, previews=True,
        )
    )

    _stage("2/5 convert: COLMAP model and RGB-D folder back into depth datasets")
    convert(ConvertConfig(source=scene / "colmap", out=out / "from_colmap", previews=True))
    convert(ConvertConfig(source=scene / "rgbd", out=out / "from_rgbd", previews=True))

    _stage("3/5 splat-train: depth-only Gaussian splats (expected depth, ED)")
    from depthcli.splat.render_dataset import render_dataset
    from depthcli.splat.trainer import SplatTrainConfig, train_splats

    splat_summary = train_splats(
        SplatTrainConfig(dataset=out / "from_rgbd", out=out / "splats", mode="ED", steps=cfg.splat_steps, seed=cfg.seed)
    )
    render_dataset(out / "splats" / "splats.ply", out / "from_rgbd", out / "renders", mode="ED")
    summary["splat_heldout"] = splat_summary.get("heldout", splat_summary)

    _stage("4/5 eval: rendered depth vs exact depth")
    from depthcli.evaluation import EvalConfig, evaluate

    tables = []
    res = evaluate(EvalConfig(preds=[out / "renders"], gt=scene, align="none"))
    tables.append(("splat renders vs exact depth (metric, no alignment)", res))

    if cfg.estimators:
        summary.update(_estimator_stage(cfg, out, tables))

    from depthcli.console import print_table

    for title, res in tables:
        cols = ["model", "images", "AbsRel", "RMSE", "delta1"]
        rows = [[r["name"], r.get("images", ""), r["metrics"]["abs_rel"], r["metrics"]["rmse"], r["metrics"]["delta1"]] for r in res.rows]
        print_table(title, cols, rows)
    summary["overview"] = str(write_overview(out, cfg.estimators))
    summary["seconds"] = round(time.time() - t0, 1)
    log(f"\nEverything is in [bold]{out}[/bold]: scene/ (synthetic truth), from_colmap/ and from_rgbd/ "
        "(converted datasets, previews/), splats/ (splats.ply, metrics.json, curves.png), renders/, "
        "estimators/ (teacher, student, predictions) and overview.png")
    return summary


def _estimator_stage(cfg: DemoConfig, out: Path, tables: list) -> dict[str, Any]:
    """Teacher on synthetic labels -> pseudo-labels on other images -> student; evaluate both."""
    from depthcli.estimators.distill import DistillConfig, distill
    from depthcli.estimators.predict import PredictConfig, predict
    from depthcli.estimators.training import TrainConfig, train_estimator
    from depthcli.evaluation import EvalConfig, evaluate
    from depthcli.synth.generate import SynthConfig, synthesize

    _stage("5/5 train + distill: tiny teacher on synthetic labels, student on its pseudo-labels, eval")
    data = out / "estimators"
    size = dict(width=cfg.width, height=cfg.height)
    # Labeled synthetic scenes for the teacher, unlabeled images of other scenes for
    # the student, and held-out scenes neither has seen.
    synthesize(SynthConfig(out=data / "labeled", scenes=cfg.scenes, frames=8, seed=cfg.seed + 100, style="mixed", **size))
    synthesize(SynthConfig(out=data / "unlabeled", scenes=cfg.scenes, frames=8, seed=cfg.seed + 200, style="mixed", **size))
    synthesize(SynthConfig(out=data / "heldout", scenes=1, frames=8, seed=cfg.seed + 300, style="indoor", **size))
    crop = 14 * (min(cfg.width, cfg.height) // 14)  # square training crop, a multiple of the patch size
    common = dict(preset="tiny", size=crop, epochs=100000, batch_size=8, lr=1e-3, max_steps=cfg.estimator_steps,
                  threads=cfg.threads, seed=cfg.seed)
    teacher = train_estimator(TrainConfig(datasets=[data / "labeled"], out=data / "teacher", val_fraction=0.05, **common))
    # The student never sees a synthetic label: only the teacher's pseudo-labels on these images.
    student = distill(DistillConfig(teachers=[Path(teacher["model"])], images=data / "unlabeled", out=data / "student", **common))
    preds = []
    for name, model in (("teacher", teacher["model"]), ("student", student["model"])):
        predict(PredictConfig(model=Path(model), images=data / "heldout" / "images", out=data / f"pred_{name}", threads=cfg.threads))
        preds.append(data / f"pred_{name}")
    preds.append(_ramp_baseline(data / "heldout", data / "pred_ramp"))
    res = evaluate(EvalConfig(preds=preds, gt=data / "heldout", align="lstsq-disparity", pred_kind="disparity"))
    tables.append(("estimators on held-out scenes (affine-invariant disparity, lstsq-disparity alignment)", res))
    return {"teacher": teacher["model"], "student": student["model"]}


def _ramp_baseline(gt: Path, out: Path) -> Path:
    """A trivial baseline: disparity growing linearly down the image (floor near, ceiling far)."""
    import numpy as np

    from depthcli.io.atomic import atomic_output_dir
    from depthcli.io.dataset import DatasetWriter, load_dataset

    ds = load_dataset(gt)
    with atomic_output_dir(out) as tmp:
        writer = DatasetWriter(tmp, depth_units="affine", depth_kind="disparity", source={"kind": "baseline", "name": "vertical ramp"})
        for f in ds.frames:
            ramp = np.repeat(np.arange(f.height, dtype=np.float32)[:, None] + 1.0, f.width, axis=1)
            writer.add_frame(f.name, ramp, f.K, f.cam_from_world)
        writer.close()
    return out


def _label(img, text: str):
    import cv2
    import numpy as np

    img = np.ascontiguousarray(img)
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def write_overview(out: Path, estimators: bool) -> Path:
    """``out/overview.png``: a held-out view with exact, rendered and predicted depth."""
    import numpy as np

    from depthcli.depth import normalize_min_max, valid_mask
    from depthcli.io.dataset import load_dataset
    from depthcli.io.images import write_image_rgb
    from depthcli.io.previews import colorize_depth, colorize_values

    gt = load_dataset(out / "scene")
    ren = load_dataset(out / "renders")
    f = gt.frames[0]  # frame 0 is held out from splat training (every 8th frame)
    d_gt = gt.read_depth(f)
    d_ren = ren.read_depth(ren.frames[0])
    lo, hi = float(np.percentile(d_gt[d_gt > 0], 1)), float(np.percentile(d_gt[d_gt > 0], 99))
    err = np.zeros_like(d_gt)
    both = (d_gt > 0) & (d_ren > 0)
    err[both] = np.abs(d_ren[both] - d_gt[both]) / d_gt[both]
    rows = [[
        _label(gt.read_image(f), "held-out view"),
        _label(colorize_depth(d_gt, lo, hi), "exact z-depth"),
        _label(colorize_depth(d_ren, lo, hi), "splat render (ED)"),
        _label(colorize_values(err, d_gt > 0, 0.0, 0.05, cmap="inferno"), "|error| / depth, 0-5%"),
    ]]
    if estimators:
        held = load_dataset(out / "estimators" / "heldout")
        hf = held.frames[0]
        d = held.read_depth(hf)
        disp = np.zeros_like(d)
        disp[d > 0] = 1.0 / d[d > 0]
        row = [_label(held.read_image(hf), "unseen scene"), _label(colorize_values(normalize_min_max(disp, d > 0), d > 0, 0, 1), "exact disparity")]
        for name in ("teacher", "student"):
            pred = load_dataset(out / "estimators" / f"pred_{name}")
            pf = next(p for p in pred.frames if Path(p.name).stem == hf.name or p.name == hf.name)
            pd = pred.read_depth(pf)
            ok = valid_mask(pd)
            row.append(_label(colorize_values(normalize_min_max(pd, ok), ok, 0, 1), f"{name} (disparity)"))
        rows.append(row)
    grid = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    path = out / "overview.png"
    write_image_rgb(path, grid)
    return path
