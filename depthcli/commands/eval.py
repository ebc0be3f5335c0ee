"""``depthcli eval PRED GT``: depth evaluation with a named, recorded protocol."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

HELP = (
    "Evaluate depth predictions against ground truth with an explicit protocol "
    "(alignment, caps, crop, averaging), recorded with the numbers. See docs/eval.md."
)


def command(
    inputs: List[Path] = typer.Argument(..., metavar="PRED GT", help="PRED GT (datasets or folders of .npy/.png/.pfm), or only GT when --pred is given."),
    pred: Optional[List[Path]] = typer.Option(None, "--pred", help="A prediction (repeat for several models: one row each, same pixels)."),
    name: Optional[List[str]] = typer.Option(None, "--name", help="Display name per --pred (default: folder name)."),
    align: str = typer.Option("none", "--align", help="none | median | lstsq (depth space, Marigold) | lstsq-disparity (MiDaS, Depth Anything)."),
    pred_kind: str = typer.Option("auto", "--pred-kind", help="depth | disparity | auto (a dataset's depth_kind; folders: depth)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="nyu | kitti | kitti-garg | eth3d | scannet | diode: published caps/crop (docs/eval.md)."),
    min_depth: Optional[float] = typer.Option(None, "--min-depth", help="Evaluate GT > this (default 1e-3 or the preset's)."),
    max_depth: Optional[float] = typer.Option(None, "--max-depth", help="Evaluate GT < this (default no cap or the preset's)."),
    crop: Optional[str] = typer.Option(None, "--crop", help="none | eigen (NYU) | garg | eigen-kitti (KITTI)."),
    gt_scale: Optional[float] = typer.Option(None, "--gt-scale", help="16-bit PNG GT: depth = value / scale (1000 NYU, 256 KITTI)."),
    pred_scale: Optional[float] = typer.Option(None, "--pred-scale", help="16-bit PNG predictions: value / scale."),
    resize: bool = typer.Option(False, "--resize", help="Resize predictions to the GT size (bilinear) instead of refusing."),
    strict: bool = typer.Option(False, "--strict", help="Unmatched frames are an error (default: listed and skipped)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="DA-2K style annotation JSON: ordinal accuracy of point pairs."),
    boundary: bool = typer.Option(False, "--boundary", help="Also compute Depth Pro's scale-invariant boundary F1 (slower)."),
    agreement_pairs: int = typer.Option(5000, "--agreement-pairs", help="Point pairs sampled per image for model agreement."),
    seed: int = typer.Option(0, "--seed", help="Seed of the agreement sampling."),
    report_dir: Optional[Path] = typer.Option(None, "--report", help="Write per-image pictures and index.html here."),
    report_limit: int = typer.Option(20, "--report-limit", help="Pictures for at most this many images."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of RGB images (matched by stem) for the report."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Write the table and protocol to this CSV file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --report folder or --csv file."),
    json: bool = typer.Option(False, "--json", help="Print protocol, rows and per-image records as JSON."),
) -> None:
    """Evaluate depth predictions against ground truth."""
    from depthcli.console import print_table, report
    from depthcli.errors import DepthcliError
    from depthcli.evaluation import EvalConfig, evaluate, tune_allocator, write_csv

    if pred:
        if len(inputs) != 1:
            raise DepthcliError("with --pred, pass only GT as argument", "depthcli eval GT --pred A --pred B")
        preds, gt = list(pred), inputs[0]
    else:
        if len(inputs) != 2:
            raise DepthcliError("expected PRED GT", "depthcli eval PRED GT, or depthcli eval GT --pred A --pred B")
        preds, gt = [inputs[0]], inputs[1]
    if csv is not None and csv.exists() and not overwrite:
        raise DepthcliError(f"CSV '{csv}' already exists", "pass --overwrite to replace it")
    cfg = EvalConfig(
        preds=preds, gt=gt, names=list(name) if name else None, align=align, pred_kind=pred_kind, preset=preset,
        min_depth=min_depth, max_depth=max_depth, crop=crop, gt_scale=gt_scale, pred_scale=pred_scale,
        resize=resize, strict=strict, pairs=pairs, boundary=boundary, agreement_pairs=agreement_pairs, seed=seed,
        report=report_dir, report_limit=report_limit, images=images, overwrite=overwrite, csv=csv,
    )
    tune_allocator()  # this process only: reuse image-sized buffers instead of page-faulting per image
    result = evaluate(cfg)
    if csv is not None:
        write_csv(result, csv, overwrite=overwrite)
    if json:
        report(result.to_json(), "depthcli eval", as_json=True)
        return
    p = result.protocol
    # Transposed (one row per metric) so a narrow terminal still shows every number.
    cols, rows = result.table()
    tcols = ["metric"] + [f"{r[0]} ({'image mean' if r[1] == 'image_mean' else 'pooled'})" for r in rows]
    trows = [[c] + ["-" if r[i] is None else r[i] for r in rows] for i, c in enumerate(cols) if i >= 2]
    cols, rows = tcols, trows
    print_table(
        f"depthcli eval: align={p['align']} ({p['align_space']}), preset={p['preset']}, crop={p['crop']}, "
        f"depth {p['min_depth']:g}..{p['max_depth'] if p['max_depth'] is not None else 'inf'}",
        cols, rows,
    )
    summary = {
        "images evaluated": p["images_evaluated"],
        "images skipped": p["images_skipped"],
        "unmatched": len(p["unmatched_gt"]) + sum(len(v) for v in p["unmatched_pred"].values()),
        "valid pixels": p["valid_pixels"],
        "GT NaN/Inf pixels": p["gt_nonfinite_pixels"],
        "prediction NaN/Inf pixels": p["pred_nonfinite_pixels"],
        "disparity clamp": p["disparity_clamp"],
        "averaging": "image_mean = per image then mean; pixel_pooled = all pixels pooled",
    }
    if report_dir is not None:
        summary["report"] = str(report_dir / "index.html")
    if csv is not None:
        summary["csv"] = str(csv)
    report(summary, "protocol")
