"""Dense depth priors: fit monocular predictions to sparse or sensor depth, per image.

``align_prior(AlignConfig(pred, target, out))`` matches each frame of the
prediction dataset ``pred`` (``depthcli predict`` output: affine-invariant
disparity, or any depth dataset) to the frame of ``target`` with the same name
(exact name, else the same file stem), fits a per-image scale ``s`` and shift
``t`` on the target's valid pixels, and writes ``out``: a z-depth dataset in the
target's units (``m`` or ``sfm``) with the target's cameras, poses and images and
the aligned prediction as dense depth.

The fit
    * space: disparity for a disparity prediction (``s * pred + t = 1 / z``),
      depth for a depth prediction (``s * pred + t = z``); ``--space`` overrides.
    * residuals are *relative*: ``r = (s x + t - y) / y`` (``y`` the target in the
      fit space), so a 5 % error counts the same near and far; in disparity
      space ``|r|`` is the relative depth error to first order.
    * robust (default): a least-median-of-squares search over 2-point samples
      (up to 50 % outliers, no threshold to tune) gives the start, then IRLS with
      Tukey's biweight (``c = 4.685 * 1.4826 * MAD``) refines it on all points;
      points with zero final weight are the outliers. ``lstsq``: one weighted
      least-squares fit (no outlier handling).
    * frames with fewer than ``min_points`` target pixels (where the prediction
      is valid too) or a non-positive fitted scale are skipped and listed; no
      frame aligned at all is an error.

Aligned maps: pixels where the prediction is invalid (<= 0), the aligned
disparity/depth is <= 0, or the aligned depth exceeds ``max_depth`` (default
``far_factor`` x the frame's largest target depth) are stored as 0 (invalid), so
sky and extrapolated background never become a fake wall.

Each output frame carries ``alignment`` in its ``dataset.json`` entry: ``space``,
``scale``, ``shift``, ``points``, ``inliers``, ``sigma`` (robust relative
residual scale), and the aligned depth's error on the target points
(``abs_rel_mean``, ``abs_rel_median``, ``rmse``, in target units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from depthcli.errors import DepthcliError

SPACES = ("auto", "depth", "disparity")
FITS = ("robust", "lstsq")
TUKEY_C = 4.685  # 95 % efficiency at Gaussian noise
MAX_FIT_POINTS = 20000  # dense (sensor) targets are subsampled for the fit; stats use every point


@dataclass
class AlignConfig:
    """Settings of :func:`align_prior` (``depthcli align`` flags)."""

    pred: Path  # prediction dataset (disparity or depth, any units)
    target: Path  # dataset with sparse (SfM) or sensor depth, z-depth in m or sfm
    out: Path  # aligned prior dataset to create (atomic)
    space: str = "auto"  # fit space: auto (disparity for disparity predictions), depth, disparity
    fit: str = "robust"  # robust (LMedS start + Tukey IRLS) or lstsq
    min_points: int = 20  # fewer valid target points -> the frame is skipped
    max_depth: Optional[float] = None  # aligned depth beyond this (target units) -> invalid
    far_factor: float = 3.0  # without max_depth: cap = far_factor x the frame's largest target depth
    previews: bool = True  # previews/ (aligned depth) and align_previews/ (prediction | aligned | residuals)
    overwrite: bool = False
    seed: int = 0  # sampling of the robust start (deterministic)

    def validate(self) -> None:
        """Refuse out-of-range settings (one line each) before anything is read or written."""
        from depthcli.validate import check_choice, check_float, check_int, check_positive, check_seed

        check_choice(self.space, "--space", SPACES)
        check_choice(self.fit, "--fit", FITS)
        check_int(self.min_points, "--min-points", min=2, hint="a scale and a shift need two points")
        check_positive(self.max_depth, "--max-depth", optional=True)
        check_float(self.far_factor, "--far-factor", min=1.0)
        check_seed(self.seed, "seed")


@dataclass
class Fit:
    """A per-image scale/shift fit in ``space`` (``s * x + t ~ y``)."""

    scale: float
    shift: float
    points: int  # points the fit saw
    inliers: int  # points with non-zero final weight (all for lstsq)
    sigma: float  # robust scale of the relative residuals (1.4826 * MAD)
    iterations: int


# ----------------------------------------------------------------------------- fitting


def _weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """``argmin_{s,t} sum w (s x + t - y)^2`` (closed form, float64)."""
    sw = float(w.sum())
    if sw <= 0:
        return 0.0, 0.0
    mx = float((w * x).sum()) / sw
    my = float((w * y).sum()) / sw
    xc = x - mx
    sxx = float((w * xc * xc).sum())
    if sxx <= 0 or not math.isfinite(sxx):
        return 0.0, my
    s = float((w * xc * (y - my)).sum()) / sxx
    return s, my - s * mx


def _rel_residuals(x, y, s, t):
    return (s * x + t - y) / y


def fit_scale_shift_robust(x: np.ndarray, y: np.ndarray, fit: str = "robust", seed: int = 0,
                           samples: int = 300, iterations: int = 30) -> Fit:
    """Fit ``s * x + t ~ y`` (``y > 0``) minimising relative residuals ``(s x + t - y) / y``.

    ``fit="robust"``: least median of squared relative residuals over ``samples``
    random 2-point models (plus the plain fit), then IRLS with Tukey's biweight.
    ``fit="lstsq"``: one least-squares fit with weights ``1 / y^2``.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    n = x.size
    base_w = 1.0 / (y * y)
    s, t = _weighted_line(x, y, base_w)
    if fit == "lstsq" or n < 3:
        r = _rel_residuals(x, y, s, t)
        return Fit(s, t, n, n, float(1.4826 * np.median(np.abs(r))) if n else float("nan"), 1)
    rng = np.random.Generator(np.random.PCG64(seed))
    i = rng.integers(0, n, samples)
    j = rng.integers(0, n, samples)
    ok = x[i] != x[j]
    i, j = i[ok], j[ok]
    ss = (y[i] - y[j]) / (x[i] - x[j])
    tt = y[i] - ss * x[i]
    cand_s = np.concatenate([[s], ss])
    cand_t = np.concatenate([[t], tt])
    best, best_med = 0, math.inf
    for k in range(cand_s.size):
        if cand_s[k] <= 0:  # a prediction is never anti-correlated with its target
            continue
        med = float(np.median(np.abs(_rel_residuals(x, y, cand_s[k], cand_t[k]))))
        if med < best_med:
            best, best_med = k, med
    s, t = float(cand_s[best]), float(cand_t[best])
    it = 0
    sigma = float("nan")
    w = np.ones(n)
    for it in range(1, iterations + 1):
        r = _rel_residuals(x, y, s, t)
        sigma = max(1.4826 * float(np.median(np.abs(r))), 1e-9)
        u = r / (TUKEY_C * sigma)
        w = np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)
        if (w > 0).sum() < 2:
            break
        s_new, t_new = _weighted_line(x, y, w * base_w)
        done = abs(s_new - s) <= 1e-10 * max(abs(s), 1e-30) and abs(t_new - t) <= 1e-10 * max(abs(t), abs(s), 1e-30)
        s, t = s_new, t_new
        if done:
            break
    r = _rel_residuals(x, y, s, t)
    sigma = 1.4826 * float(np.median(np.abs(r)))
    inliers = int((np.abs(r) < TUKEY_C * max(sigma, 1e-9)).sum())
    return Fit(float(s), float(t), n, inliers, sigma, it)


def apply_fit(pred: np.ndarray, scale: float, shift: float, space: str, pred_kind: str,
              max_depth: float) -> np.ndarray:
    """Aligned z-depth of a raw prediction map (0 = invalid), see the module docstring."""
    pred = np.asarray(pred, dtype=np.float64)
    valid = np.isfinite(pred) & (pred > 0)
    x = _to_space(pred, valid, space, pred_kind)
    v = scale * x + shift
    out = np.zeros(pred.shape, dtype=np.float64)
    good = valid & (v > 0)
    if space == "disparity":
        good &= v > 1.0 / max_depth
        out[good] = 1.0 / v[good]
    else:
        good &= v <= max_depth
        out[good] = v[good]
    return out.astype(np.float32)


def _to_space(pred: np.ndarray, valid: np.ndarray, space: str, pred_kind: str) -> np.ndarray:
    """Raw prediction values in the fit space (invalid pixels -> 0)."""
    x = np.zeros(pred.shape, dtype=np.float64)
    if (space == "disparity") == (pred_kind == "disparity"):
        x[valid] = pred[valid]
    else:  # depth <-> disparity of the raw values (exact only for an unshifted prediction)
        x[valid] = 1.0 / pred[valid]
    return x


# ----------------------------------------------------------------------------- matching


def _match_frames(pred_ds, target_ds) -> tuple[dict[str, Any], list[str]]:
    """target frame name -> prediction frame (exact name, else unique file stem); and unmatched names."""
    from depthcli.io.dataset import safe_stem

    by_name = {f.name: f for f in pred_ds.frames}
    by_stem: dict[str, list] = {}
    for f in pred_ds.frames:
        by_stem.setdefault(safe_stem(f.name), []).append(f)
    matched, missing = {}, []
    for f in target_ds.frames:
        p = by_name.get(f.name)
        if p is None:
            cands = by_stem.get(safe_stem(f.name), [])
            p = cands[0] if len(cands) == 1 else None
        if p is None:
            missing.append(f.name)
        else:
            matched[f.name] = p
    return matched, missing


def resize_prediction(pred: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a prediction; pixels near invalid (0) ones stay invalid."""
    import cv2

    valid = (pred > 0).astype(np.float32)
    out = cv2.resize(pred.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    vr = cv2.resize(valid, (width, height), interpolation=cv2.INTER_LINEAR)
    out[vr < 0.999] = 0
    return out


# ----------------------------------------------------------------------------- the command


def align_prior(cfg: AlignConfig) -> dict[str, Any]:
    """Align every matched prediction to its target frame; write ``cfg.out``; return a summary.

    The summary has one row per target frame in ``frames`` (``status`` = ``aligned``
    or the reason it was skipped) and the counts.
    """
    from depthcli.console import track, warn
    from depthcli.io.atomic import atomic_output_dir, check_output_dir
    from depthcli.io.dataset import DatasetWriter, load_dataset

    cfg.validate()
    check_output_dir(Path(cfg.out), cfg.overwrite)
    pred_ds = load_dataset(Path(cfg.pred))
    target_ds = load_dataset(Path(cfg.target))
    if target_ds.depth_kind != "z" or target_ds.depth_units == "affine":
        raise DepthcliError(
            f"target '{cfg.target}' holds {target_ds.depth_units} {target_ds.depth_kind}; align needs z-depth in m or sfm",
            "pass the converted COLMAP model or the RGB-D dataset as TARGET",
        )
    for p in (Path(cfg.pred), Path(cfg.target)):
        if Path(cfg.out).resolve() == p.resolve():
            raise DepthcliError(f"output '{cfg.out}' is one of the inputs", "choose another output folder")
    pred_kind = "disparity" if pred_ds.depth_kind == "disparity" else "depth"
    space = pred_kind if cfg.space == "auto" else cfg.space
    matched, missing = _match_frames(pred_ds, target_ds)
    if not matched:
        raise DepthcliError(
            f"no frame of '{cfg.pred}' matches a frame of '{cfg.target}' by name",
            "predict on the target's images (e.g. depthcli predict MODEL TARGET/images OUT)",
        )

    rows: list[dict[str, Any]] = []
    settings = {"space": space, "fit": cfg.fit, "min_points": cfg.min_points, "prediction_kind": pred_kind,
                "prediction_units": pred_ds.depth_units, "max_depth": cfg.max_depth, "far_factor": cfg.far_factor,
                "residuals": "relative: (s x + t - y) / y in the fit space"}
    with atomic_output_dir(Path(cfg.out), cfg.overwrite) as tmp:
        writer = DatasetWriter(
            tmp, depth_units=target_ds.depth_units, depth_kind="z", previews=cfg.previews,
            source={"kind": "align", "prediction": str(Path(cfg.pred).absolute()),
                    "target": str(Path(cfg.target).absolute()), **settings},
            meta={"prior": {"what": "monocular prediction aligned per image (scale, shift) to the target's depth",
                            **settings}},
        )
        panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for f in track(target_ds.frames, "align"):
            row: dict[str, Any] = {"frame": f.name}
            rows.append(row)
            p = matched.get(f.name)
            if p is None:
                row["status"] = "no prediction"
                continue
            pred = pred_ds.read_depth(p, nonfinite="invalid")
            if pred.shape != (f.height, f.width):
                row["resized_from"] = f"{pred.shape[1]}x{pred.shape[0]}"
                pred = resize_prediction(pred, f.width, f.height)
            gt = target_ds.read_depth(f)
            use = (gt > 0) & (pred > 0)
            n = int(use.sum())
            row["points"] = n
            if n < cfg.min_points:
                row["status"] = f"skipped: {n} < --min-points"
                continue
            x_all = _to_space(pred, pred > 0, space, pred_kind)[use]
            y_all = gt[use].astype(np.float64)
            if space == "disparity":
                y_all = 1.0 / y_all
            if n > MAX_FIT_POINTS:
                pick = np.random.Generator(np.random.PCG64(cfg.seed)).choice(n, MAX_FIT_POINTS, replace=False)
                fit = fit_scale_shift_robust(x_all[pick], y_all[pick], cfg.fit, cfg.seed)
            else:
                fit = fit_scale_shift_robust(x_all, y_all, cfg.fit, cfg.seed)
            row.update(scale=fit.scale, shift=fit.shift, inliers=fit.inliers, sigma=fit.sigma)
            if not (fit.scale > 0 and math.isfinite(fit.scale) and math.isfinite(fit.shift)):
                row["status"] = "skipped: scale <= 0"
                continue
            cap = cfg.max_depth if cfg.max_depth is not None else cfg.far_factor * float(gt[gt > 0].max())
            aligned = apply_fit(pred, fit.scale, fit.shift, space, pred_kind, cap)
            a = aligned[use].astype(np.float64)
            g = gt[use].astype(np.float64)
            covered = a > 0
            rel = np.abs(a[covered] - g[covered]) / g[covered]
            row.update(
                abs_rel_mean=float(rel.mean()) if rel.size else float("nan"),
                abs_rel_median=float(np.median(rel)) if rel.size else float("nan"),
                rmse=float(np.sqrt(np.mean((a[covered] - g[covered]) ** 2))) if rel.size else float("nan"),
                valid_fraction=float((aligned > 0).mean()),
                status="aligned",
            )
            extra = {"alignment": {"space": space, "fit": cfg.fit, **{k: row[k] for k in (
                "scale", "shift", "points", "inliers", "sigma", "abs_rel_mean", "abs_rel_median", "rmse")},
                "max_depth": cap, "prediction_frame": p.name}}
            if "resized_from" in row:
                extra["alignment"]["resized_from"] = row["resized_from"]
            image = (target_ds.root / f.image) if f.image is not None else None
            writer.add_frame(f.name, aligned, f.K, f.cam_from_world, image=image, extra=extra)
            if cfg.previews:
                panels.append((f.name, pred, aligned, gt, use, covered))
        if writer.frames == []:
            reasons = sorted({r["status"] for r in rows})
            raise DepthcliError(f"no frame could be aligned ({'; '.join(reasons)})",
                                "lower --min-points or check that PRED and TARGET show the same images")
        writer.meta["prior"]["skipped"] = {r["frame"]: r["status"] for r in rows if r["status"] != "aligned"}
        summary = writer.close()
        if cfg.previews:
            _write_panels(tmp, writer, panels)
    aligned_rows = [r for r in rows if r["status"] == "aligned"]
    skipped = [r for r in rows if r["status"] != "aligned"]
    if skipped:
        warn(f"{len(skipped)} of {len(rows)} frames not aligned (scale <= 0: the prediction does not follow the target): "
             + "; ".join(f"{r['frame']}: {r['status']}" for r in skipped[:3]) + (" ..." if len(skipped) > 3 else ""))
    med = lambda k: float(np.median([r[k] for r in aligned_rows]))  # noqa: E731
    summary.update({
        "output": str(cfg.out), "space": space, "fit": cfg.fit, "aligned": len(aligned_rows),
        "skipped": len(skipped), "predictions_unused": len(pred_ds.frames) - len(matched),
        "median_points": med("points"), "median_abs_rel": med("abs_rel_median"),
        "frames": rows,
    })
    return summary


def _write_panels(folder: Path, writer, panels) -> None:
    """``align_previews/NAME.png``: raw prediction | aligned prior | signed relative residual at target points."""
    import cv2

    from depthcli.io.images import write_image_rgb
    from depthcli.io.previews import colorize_depth, colorize_values

    if not panels:
        return
    lo_hi = writer.depth_range or (0.1, 10.0)
    (folder / "align_previews").mkdir(exist_ok=True)
    for frame, (name, pred, aligned, gt, use, covered) in zip(writer.frames, panels):
        pv = pred > 0
        vals = pred[pv]
        lo, hi = (float(np.percentile(vals, 1)), float(np.percentile(vals, 99))) if vals.size else (0.0, 1.0)
        raw = colorize_values(pred, pv, lo, hi)
        al = colorize_depth(aligned, lo_hi[0], lo_hi[1])
        res = np.zeros(gt.shape, dtype=np.float64)
        where = np.zeros(gt.shape, dtype=bool)
        idx = np.flatnonzero(use.ravel())[covered]
        where.ravel()[idx] = True
        res[where] = (aligned[where] - gt[where]) / gt[where]
        # signed relative error, -20 % .. +20 %: blue = prior too near, red = too far
        resc = colorize_values(np.clip(res, -0.2, 0.2), where, -0.2, 0.2, cmap="jet")
        if where.mean() < 0.05:
            resc = cv2.dilate(resc, np.ones((3, 3), np.uint8))
        gap = np.full((gt.shape[0], 2, 3), 255, np.uint8)
        write_image_rgb(folder / "align_previews" / f"{Path(frame.depth).stem}.png",
                        np.concatenate([raw, gap, al, gap, resc], axis=1))


def fit_table(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the per-frame summary table."""
    cols = ["frame", "points", "inliers", "scale", "shift", "abs_rel_median", "status"]
    rows = [[r.get(c, "") for c in cols] for r in summary["frames"]]
    return cols, rows

