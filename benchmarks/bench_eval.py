"""Benchmark ``depthcli eval``: time, megapixels/s and peak memory per alignment.

    python benchmarks/bench_eval.py [--images 200] [--width 640 --height 480]

Generates N GT depth maps (float32 .npy, 20 % invalid) and one prediction
folder (``1.2 * gt + 0.3 + noise``) in a temporary folder, then times
``depthcli.evaluation.evaluate`` (files read, masked, aligned, scored: the real
streaming path) for every alignment, as the CLI runs it (after
``tune_allocator()``, which ``depthcli eval`` calls), plus one run with the
default allocator for comparison. Wall and process-CPU seconds are both shown
(the CPU time is what idle cores would take; the machine may be shared).
Memory: peak RSS after 50 and after N images, and peak traced heap
(tracemalloc, which numpy reports to) at 50 and at N images: flat memory means
the pairs are about equal. Baseline in the same process: a naive evaluator that
loads every image first and computes in float64 with ``np.linalg.lstsq`` (the
common research-script pattern)."""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def generate(folder: Path, n: int, h: int, w: int, seed: int = 0) -> tuple[Path, Path]:
    import cv2

    rng = np.random.default_rng(seed)
    gt_dir, pred_dir = folder / "gt", folder / "pred"
    gt_dir.mkdir(parents=True)
    pred_dir.mkdir()
    for i in range(n):
        coarse = rng.uniform(0.5, 9.0, (h // 32, w // 32)).astype(np.float32)
        gt = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0.3, 9.5)
        gt[rng.random((h, w)) < 0.2] = 0
        pred = 1.2 * gt + 0.3 + rng.normal(0, 0.05, (h, w)).astype(np.float32)
        np.save(gt_dir / f"{i:05d}.npy", gt)
        np.save(pred_dir / f"{i:05d}.npy", pred.astype(np.float32))
    return gt_dir, pred_dir


def run_depthcli(gt_dir: Path, pred_dir: Path, align: str, workers: int = 0) -> dict:
    from depthcli.evaluation import EvalConfig, evaluate

    res = evaluate(EvalConfig(preds=[pred_dir], gt=gt_dir, align=align, max_depth=10.0, workers=workers))
    return res.rows[0]["metrics"]


def run_naive(gt_dir: Path, pred_dir: Path) -> float:
    """All images in memory, float64, lstsq via np.linalg.lstsq; returns mean AbsRel."""
    gts = [np.load(p).astype(np.float64) for p in sorted(gt_dir.glob("*.npy"))]
    preds = [np.load(p).astype(np.float64) for p in sorted(pred_dir.glob("*.npy"))]
    out = []
    for gt, pred in zip(gts, preds):
        m = (gt > 1e-3) & (gt < 10.0)
        p, g = pred[m], gt[m]
        A = np.stack([p, np.ones_like(p)], axis=1)
        (s, t), *_ = np.linalg.lstsq(A, g, rcond=None)
        p = np.clip(s * p + t, 1e-3, 10.0)
        thresh = np.maximum(p / g, g / p)
        metrics = {
            "abs_rel": np.mean(np.abs(p - g) / g),
            "sq_rel": np.mean((p - g) ** 2 / g),
            "rmse": np.sqrt(np.mean((p - g) ** 2)),
            "rmse_log": np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2)),
            "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
            "d1": np.mean(thresh < 1.25), "d2": np.mean(thresh < 1.25**2), "d3": np.mean(thresh < 1.25**3),
            "silog": np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2) - np.mean(np.log(p) - np.log(g)) ** 2) * 100,
            "irmse": np.sqrt(np.mean((1 / p - 1 / g) ** 2)),
        }
        out.append(metrics["abs_rel"])
    return float(np.mean(out))


def timed(fn, *args):
    """(wall seconds, process CPU seconds, value). On a shared machine the CPU time
    is what one idle core would take (numpy here is single-threaded)."""
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0, value


def peak_mb(fn, *args) -> float:
    gc.collect()
    tracemalloc.start()
    fn(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    args = ap.parse_args()
    from depthcli.align import ALIGN_METHODS
    from depthcli.console import console
    from depthcli.evaluation import tune_allocator

    console.quiet = True  # no progress bars in the timings' output
    n, h, w = args.images, args.height, args.width
    mp = n * h * w / 1e6
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    try:
        t_gen, _, _ = timed(generate, tmp / "big", n, h, w)
        small_gt, small_pred = generate(tmp / "small", 50, h, w, seed=1)
        gt_dir, pred_dir = tmp / "big" / "gt", tmp / "big" / "pred"
        print(f"{n} images of {w}x{h} ({mp:.1f} MP) generated in {t_gen:.1f} s; numpy {np.__version__}")
        run_depthcli(small_gt, small_pred, "lstsq")  # warm caches / imports
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        header = f"{'method':34s} {'wall s':>7s} {'MP/s':>7s} {'cpu s':>7s} {'MP/cpu-s':>9s}  AbsRel"

        def row(label, t, c, absrel):
            print(f"{label:34s} {t:7.2f} {mp / t:7.1f} {c:7.2f} {mp / c:9.1f}  {absrel:.4f}")

        print(header)
        # 1. memory: peak RSS and peak traced heap at 50, then at N images
        rss = []
        for g, p in ((small_gt, small_pred), (gt_dir, pred_dir)):
            run_depthcli(g, p, "lstsq")
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        t, c, m = timed(run_depthcli, gt_dir, pred_dir, "lstsq")
        row("depthcli lstsq, default malloc", t, c, m["abs_rel"])
        # 2. as the CLI runs (depthcli eval calls tune_allocator)
        tuned = tune_allocator()
        results = {}
        for align in ALIGN_METHODS:
            t, c, m = timed(run_depthcli, gt_dir, pred_dir, align)
            results[align] = (t, c)
            row(f"depthcli {align}" + ("" if tuned else " (untuned)"), t, c, m["abs_rel"])
        t, c, m = timed(run_depthcli, gt_dir, pred_dir, "lstsq", 1)
        row("depthcli lstsq, 1 thread", t, c, m["abs_rel"])
        p50 = peak_mb(run_depthcli, small_gt, small_pred, "lstsq")
        pn = peak_mb(run_depthcli, gt_dir, pred_dir, "lstsq")
        t_naive, c_naive, absrel = timed(run_naive, gt_dir, pred_dir)
        row("naive lstsq (float64, all loaded)", t_naive, c_naive, absrel)
        print(f"speed-up of depthcli lstsq over naive: {t_naive / results['lstsq'][0]:.1f}x wall, "
              f"{c_naive / results['lstsq'][1]:.1f}x cpu")
        naive50 = peak_mb(run_naive, small_gt, small_pred)
        naiven = peak_mb(run_naive, gt_dir, pred_dir)
        print(f"peak RSS of the process after depthcli at 50 images: {rss[0]:.0f} MB, after {n} images: {rss[1]:.0f} MB")
        print(f"peak traced heap, depthcli lstsq: {p50:.1f} MB at 50 images, {pn:.1f} MB at {n} images")
        print(f"peak traced heap, naive:          {naive50:.1f} MB at 50 images, {naiven:.1f} MB at {n} images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
