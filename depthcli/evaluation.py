"""Depth evaluation with explicit, named, recorded protocols (``depthcli eval``).

``evaluate(EvalConfig(preds=[...], gt=...))`` streams over the matched images:
for each image it reads the GT and every prediction, builds ONE valid mask
(GT finite, ``min_depth < gt < max_depth``, inside the crop, every prediction
finite there), aligns each prediction per image (:mod:`depthcli.align`), scores
it (:mod:`depthcli.metrics`) and keeps only additive sums, so memory does not
grow with the number of images. Results come in two averagings:

* ``image_mean``: metrics per image, then the mean over images (Marigold, BTS);
* ``pixel_pooled``: every valid pixel of every image in one pool.

The protocol (alignment, clamp, caps, crop, averaging, pixel counts, NaN/Inf
counts) is returned with the numbers in :attr:`EvalResult.protocol`.
See ``docs/eval.md``.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from depthcli.align import ALIGN_METHODS, PRED_KINDS, fit_alignment
from depthcli.errors import DepthcliError
from depthcli.metrics import METRIC_NAMES, MetricSums, boundary_f1, disputed_pairs, sample_pairs

CROPS = ("none", "eigen", "garg", "eigen-kitti")

#: Published evaluation protocols. ``gt_scale`` only applies to 16-bit PNG GT.
PRESETS: dict[str, dict[str, Any]] = {
    "nyu": {
        "min_depth": 1e-3, "max_depth": 10.0, "crop": "eigen", "gt_scale": 1000.0,
        "source": "Marigold src/dataset/nyu_dataset.py (min 1e-3, max 10, eval_mask[45:471, 41:601]); "
        "same crop in BTS / Depth-Anything metric_depth (eigen_crop)",
    },
    "kitti": {
        "min_depth": 1e-5, "max_depth": 80.0, "crop": "eigen-kitti", "gt_scale": 256.0,
        "source": "Marigold src/dataset/kitti_dataset.py (min 1e-5, max 80, valid_mask_crop='eigen': "
        "rows 0.3324324h:0.91351351h, cols 0.0359477w:0.96405229w; Marigold also applies the 352x1216 "
        "KITTI benchmark crop to inputs first, depthcli does not)",
    },
    "kitti-garg": {
        "min_depth": 1e-3, "max_depth": 80.0, "crop": "garg", "gt_scale": 256.0,
        "source": "BTS bts_eval.py / monodepth2 evaluate_depth.py / Depth-Anything metric_depth "
        "(min 1e-3, max 80, Garg crop rows 0.40810811h:0.99189189h, cols 0.03594771w:0.96405229w)",
    },
    "eth3d": {
        "min_depth": 1e-5, "max_depth": None, "crop": "none", "gt_scale": None,
        "source": "Marigold src/dataset/eth3d_dataset.py (min 1e-5, max inf; inf GT is invalid)",
    },
    "scannet": {
        "min_depth": 1e-3, "max_depth": 10.0, "crop": "none", "gt_scale": 1000.0,
        "source": "Marigold src/dataset/scannet_dataset.py (min 1e-3, max 10)",
    },
    "diode": {
        "min_depth": 0.6, "max_depth": 350.0, "crop": "none", "gt_scale": None,
        "source": "Marigold src/dataset/diode_dataset.py (min 0.6, max 350; DIODE's own validity mask "
        "must already be applied as GT = 0)",
    },
}
DEFAULT_MIN_DEPTH = 1e-3


@dataclass
class EvalConfig:
    """What to evaluate and under which protocol (every field is recorded)."""

    preds: list[Path]  # prediction sources: datasets, folders of depth files, or one folder of such folders
    gt: Path  # ground truth: a depth dataset or a folder of depth files (z-depth, 0 = invalid)
    names: list[str] | None = None  # display name per prediction (default: folder names)
    align: str = "none"  # none | median | lstsq | lstsq-disparity (see depthcli.align)
    pred_kind: str = "auto"  # depth | disparity | auto (a dataset's depth_kind; folders: depth)
    preset: str | None = None  # nyu | kitti | kitti-garg | eth3d | scannet | diode: fills caps/crop/scale
    min_depth: float | None = None  # GT strictly above this is evaluated (default 1e-3 or the preset's)
    max_depth: float | None = None  # GT strictly below this is evaluated (default: no cap, or the preset's)
    crop: str | None = None  # none | eigen (NYU 480x640) | garg | eigen-kitti (default none or the preset's)
    gt_scale: float | None = None  # 16-bit PNG GT: depth = value / gt_scale
    pred_scale: float | None = None  # 16-bit PNG predictions: value / pred_scale
    resize: bool = False  # resize predictions to the GT size (bilinear) instead of refusing a size mismatch
    strict: bool = False  # unmatched frames between PRED and GT are an error (default: listed, skipped)
    pairs: Path | None = None  # DA-2K style JSON of annotated point pairs -> ordinal accuracy
    boundary: bool = False  # compute Depth Pro's scale-invariant boundary F1 (slower)
    agreement_pairs: int = 5000  # point pairs sampled per image for model agreement (>= 2 models)
    seed: int = 0  # seed of the agreement sampling (per image: seed + crc32(name))
    report: Path | None = None  # folder for per-image pictures and index.html
    report_limit: int = 20  # at most this many images get pictures
    images: Path | None = None  # optional folder of RGB images (matched by stem) for the report
    overwrite: bool = False  # replace an existing report folder
    csv: Path | None = None  # the CSV the caller writes (write_csv): only checked here, like report, for overlap
    workers: int = 0  # threads scoring images in parallel (0: min(4, CPU count)); results do not depend on it

    def validate(self) -> None:
        """Refuse out-of-range settings (one line each) before anything is read or written."""
        from depthcli.validate import check_choice, check_int, check_positive, check_seed

        if self.preset is not None:
            check_choice(self.preset, "preset (--preset)", PRESETS)
        check_choice(self.align, "alignment (--align)", ALIGN_METHODS)
        check_choice(self.pred_kind, "prediction kind (--pred-kind)", PRED_KINDS + ("auto",))
        if self.crop is not None:
            check_choice(self.crop, "crop (--crop)", CROPS)
        check_positive(self.min_depth, "--min-depth", optional=True)
        check_positive(self.max_depth, "--max-depth", optional=True)
        check_positive(self.gt_scale, "--gt-scale", optional=True)
        check_positive(self.pred_scale, "--pred-scale", optional=True)
        check_int(self.agreement_pairs, "--agreement-pairs", min=0, max=10**7)
        check_seed(self.seed)
        check_int(self.report_limit, "--report-limit", min=0)
        check_int(self.workers, "workers", min=0, max=256)


@dataclass
class EvalResult:
    """``rows``: one dict per model (``name``, ``metrics`` image-mean, ``metrics_pooled``,
    counts). ``protocol``: every choice and count. ``per_image``: small per-image records."""

    rows: list[dict[str, Any]]
    protocol: dict[str, Any]
    per_image: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """Columns and rows for a table: two rows per model (image mean, pixel pooled)."""
        extra = [k for k in ("boundary_f1", "pairs_accuracy", "disputed_fraction") if any(k in r["metrics"] for r in self.rows)]
        cols = ["model", "averaging", "images"] + list(METRIC_NAMES) + extra
        out = []
        for r in self.rows:
            out.append([r["name"], "image_mean", r["images"]] + [r["metrics"].get(k) for k in METRIC_NAMES + tuple(extra)])
            out.append([r["name"], "pixel_pooled", r["images"]] + [r["metrics_pooled"].get(k) for k in METRIC_NAMES] + [None] * len(extra))
        return cols, out

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "rows": self.rows, "per_image": self.per_image}


# --------------------------------------------------------------------------- protocol


def crop_mask(crop: str, height: int, width: int) -> np.ndarray | None:
    """Boolean evaluation crop (True = evaluated), or None for ``none``.

    * ``eigen`` (NYU): rows 45:471, cols 41:601 of a 480x640 image (Eigen et al. 2014,
      as BTS, Marigold, Depth-Anything).
    * ``garg`` (KITTI): rows int(0.40810811 h):int(0.99189189 h), cols int(0.03594771 w):int(0.96405229 w).
    * ``eigen-kitti`` (KITTI): rows int(0.3324324 h):int(0.91351351 h), cols int(0.0359477 w):int(0.96405229 w).
    """
    if crop in (None, "none"):
        return None
    m = np.zeros((height, width), dtype=bool)
    if crop == "eigen":
        if (height, width) != (480, 640):
            raise DepthcliError(
                f"the NYU eigen crop is defined for 480x640 images, GT is {width}x{height}",
                "use --crop none, or evaluate at NYU's 640x480 resolution",
            )
        m[45:471, 41:601] = True
    elif crop == "garg":
        m[int(0.40810811 * height):int(0.99189189 * height), int(0.03594771 * width):int(0.96405229 * width)] = True
    elif crop == "eigen-kitti":
        m[int(0.3324324 * height):int(0.91351351 * height), int(0.0359477 * width):int(0.96405229 * width)] = True
    else:
        raise DepthcliError(f"unknown crop '{crop}'", f"use one of {', '.join(CROPS)}")
    return m


def resolve_protocol(cfg: EvalConfig) -> dict[str, Any]:
    """Merge preset values with explicit settings (explicit wins); validate."""
    preset: dict[str, Any] = {}
    if cfg.preset is not None:
        if cfg.preset not in PRESETS:
            raise DepthcliError(f"unknown preset '{cfg.preset}'", f"use one of {', '.join(PRESETS)}")
        preset = PRESETS[cfg.preset]
    if cfg.align not in ALIGN_METHODS:
        raise DepthcliError(f"unknown alignment '{cfg.align}'", f"use one of {', '.join(ALIGN_METHODS)}")
    if cfg.pred_kind not in PRED_KINDS + ("auto",):
        raise DepthcliError(f"unknown prediction kind '{cfg.pred_kind}'", "use depth, disparity or auto")
    min_depth = cfg.min_depth if cfg.min_depth is not None else preset.get("min_depth", DEFAULT_MIN_DEPTH)
    max_depth = cfg.max_depth if cfg.max_depth is not None else preset.get("max_depth")
    crop = cfg.crop if cfg.crop is not None else preset.get("crop", "none")
    gt_scale = cfg.gt_scale if cfg.gt_scale is not None else preset.get("gt_scale")
    if crop not in CROPS:
        raise DepthcliError(f"unknown crop '{crop}'", f"use one of {', '.join(CROPS)}")
    if not (min_depth > 0 and math.isfinite(min_depth)):
        raise DepthcliError(f"--min-depth must be > 0, got {min_depth}", "aligned depth is clipped to it, so metrics stay finite")
    if max_depth is not None and not max_depth > min_depth:
        raise DepthcliError(f"--max-depth ({max_depth}) must be larger than --min-depth ({min_depth})")
    if cfg.align == "lstsq-disparity" or cfg.pred_kind == "disparity":
        clamp = f"aligned disparity clamped to >= {'1/max_depth = %.6g' % (1 / max_depth) if max_depth else '1/(largest valid GT depth of the image)'} before inversion"
    else:
        clamp = "none (depth space)"
    return {
        "preset": cfg.preset,
        "preset_source": preset.get("source"),
        "align": cfg.align,
        "align_space": {"none": "none (metric)", "median": "depth (scale only)", "lstsq": "depth (scale and shift)",
                        "lstsq-disparity": "disparity (scale and shift)"}[cfg.align],
        "disparity_clamp": clamp,
        "min_depth": min_depth,
        "max_depth": max_depth,
        "valid_gt": f"finite and {min_depth:g} < gt < {max_depth if max_depth is not None else 'inf'} (strict), inside the crop",
        "post_align_clip": f"aligned depth clipped to [{min_depth:g}, {max_depth if max_depth is not None else 'inf'}]",
        "crop": crop,
        "gt_scale": gt_scale,
        "pred_scale": cfg.pred_scale,
        "resize": "bilinear resize of predictions to GT size" if cfg.resize else "none (size mismatch is an error)",
        "mask": "one mask per image shared by all models: valid GT AND every prediction finite",
        "nonfinite_predictions": "excluded from the shared mask and counted (nonfinite_pixels per model)",
        "averaging": {"image_mean": "metric per image, then mean over images",
                      "pixel_pooled": "all valid pixels of all images pooled"},
        "silog": "100*sqrt(mean(e^2)-mean(e)^2), e = ln pred - ln gt (float64, variance about the mean)",
        "silog_dav2": "sqrt(mean(e^2)-0.5*mean(e)^2) (Depth-Anything-V2, no x100)",
        "irmse_units": "1/GT units",
    }


# --------------------------------------------------------------------------- sources

_KNOWN_SUFFIXES = {".npy", ".png", ".pfm", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp", ".exr"}


def match_key(name: str) -> str:
    """Matching key of a frame or file name: the name without a known file suffix."""
    p = Path(name)
    return p.with_suffix("").as_posix() if p.suffix.lower() in _KNOWN_SUFFIXES else p.as_posix()


class _Source:
    """One set of depth maps (GT or one model), read one image at a time."""

    def __init__(self, path: Path, name: str, scale: float | None, role: str):
        from depthcli.io.depth_files import DEPTH_SUFFIXES

        self.path = Path(path)
        self.name = name
        self.role = role
        self.dataset = None
        self.units: str | None = None
        self.kind = "depth"
        self.files: dict[str, tuple[Path, float | None]] = {}
        if not self.path.exists():
            raise DepthcliError(f"{role} '{path}' does not exist")
        if (self.path / "dataset.json").is_file():
            from depthcli.io.dataset import load_dataset

            ds = load_dataset(self.path)
            self.dataset = ds
            self.units = ds.depth_units
            self.kind = "disparity" if ds.depth_kind == "disparity" else "depth"
            for f in ds.frames:
                self.files[match_key(f.name)] = (ds.path_of(f.depth, f"frame '{f.name}' depth"), f.depth_scale if f.depth_scale is not None else scale)
            self.frames = {match_key(f.name): f for f in ds.frames}
            return
        if not self.path.is_dir():
            raise DepthcliError(f"{role} '{path}' is not a folder", "pass a depth dataset or a folder of .npy/.png/.pfm files")
        for p in sorted(self.path.iterdir()):
            if p.is_file() and p.suffix.lower() in DEPTH_SUFFIXES:
                key = p.stem
                if key in self.files:
                    raise DepthcliError(f"{role} folder '{path}' has two depth files named '{key}'", "keep one file per stem")
                if p.suffix.lower() == ".png" and scale is None:
                    raise DepthcliError(
                        f"{role} folder '{path}' holds 16-bit PNG depth but no scale was given",
                        "pass --gt-scale (GT) or --pred-scale (predictions), e.g. 1000 for millimetres, 256 for KITTI",
                    )
                self.files[key] = (p, scale)

    def keys(self) -> list[str]:
        return list(self.files)

    def read(self, key: str) -> np.ndarray:
        """Raw float32 map of one image (non-finite values kept, the caller counts them)."""
        from depthcli.io.depth_files import read_depth_file

        path, scale = self.files[key]
        return read_depth_file(path, scale)

    def image(self, key: str) -> np.ndarray | None:
        if self.dataset is None:
            return None
        try:
            return self.dataset.read_image(self.frames[key])
        except DepthcliError:
            return None


def _has_depth_files(folder: Path) -> bool:
    from depthcli.io.depth_files import DEPTH_SUFFIXES

    return any(p.is_file() and p.suffix.lower() in DEPTH_SUFFIXES for p in folder.iterdir())


def expand_pred_paths(preds: list[Path]) -> list[Path]:
    """A single folder holding only prediction folders stands for each of them."""
    preds = [Path(p) for p in preds]
    if len(preds) == 1:
        p = preds[0]
        if p.is_dir() and not (p / "dataset.json").is_file() and not _has_depth_files(p):
            subs = sorted(s for s in p.iterdir() if s.is_dir() and not s.name.startswith(".")
                          and ((s / "dataset.json").is_file() or _has_depth_files(s)))
            if subs:
                return subs
    return preds


def load_pairs(path: Path) -> dict[str, list[tuple[tuple[int, int], tuple[int, int]]]]:
    """DA-2K annotations: ``{image_path: [{"point1": [row, col], "point2": [row, col],
    "closer_point": "point1"|"point2"}, ...]}`` -> ``{match_key: [(closer, farther), ...]}``."""
    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"pairs file '{path}' does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DepthcliError(f"pairs file '{path}' is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DepthcliError(f"pairs file '{path}' must map image paths to lists of pairs (DA-2K layout)")
    out: dict[str, list] = {}
    for img, items in data.items():
        if not isinstance(items, list):
            raise DepthcliError(f"pairs file '{path}': entry '{img}' is not a list")
        pairs = []
        for it in items:
            try:
                p1 = (int(it["point1"][0]), int(it["point1"][1]))
                p2 = (int(it["point2"][0]), int(it["point2"][1]))
                closer = it.get("closer_point", "point1")
            except (KeyError, TypeError, IndexError, ValueError):
                raise DepthcliError(f"pairs file '{path}': entry '{img}' needs point1, point2 ([row, col]) and closer_point") from None
            if closer not in ("point1", "point2"):
                raise DepthcliError(f"pairs file '{path}': closer_point must be 'point1' or 'point2', got {closer!r}")
            pairs.append((p1, p2) if closer == "point1" else (p2, p1))
        out[match_key(img)] = pairs
    return out


# --------------------------------------------------------------------------- in-memory API


def evaluate_arrays(
    pred: Any,
    gt: Any,
    valid: Any = None,
    align: str = "lstsq",
    pred_kind: str = "depth",
    min_depth: float = DEFAULT_MIN_DEPTH,
    max_depth: float | None = None,
) -> dict[str, float]:
    """Score one in-memory prediction (numpy or torch) against z-depth GT.

    ``valid``: boolean mask (default: GT finite and in ``(min_depth, max_depth)``),
    intersected with finite predictions. Returns the metrics of
    :data:`depthcli.metrics.METRIC_NAMES` plus ``scale``, ``shift`` and
    ``valid_pixels`` (NaN metrics when no pixel is valid).
    """
    pred = _to_numpy(pred).astype(np.float32, copy=False)
    gt = _to_numpy(gt).astype(np.float32, copy=False)
    if pred.shape != gt.shape:
        raise DepthcliError(f"prediction shape {pred.shape} != GT shape {gt.shape}")
    m = np.isfinite(gt) & (gt > min_depth)
    if max_depth is not None:
        m &= gt < max_depth
    if valid is not None:
        m &= _to_numpy(valid).astype(bool)
    m &= np.isfinite(pred)
    pv, gv = pred[m], gt[m]
    al = fit_alignment(pv, gv, align, pred_kind, min_depth, max_depth)
    out: dict[str, float] = MetricSums.of(al.apply(pv), gv).metrics()
    out.update(scale=al.scale, shift=al.shift, valid_pixels=int(pv.size))
    return out


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x).squeeze()


# --------------------------------------------------------------------------- streaming


@dataclass
class _ModelState:
    name: str
    kind: str
    pooled: MetricSums = field(default_factory=MetricSums)
    mean_sum: dict[str, float] = field(default_factory=dict)
    images: int = 0
    nonfinite_pixels: int = 0
    nonfinite_in_gt_valid: int = 0
    boundary_sum: float = 0.0
    pairs_correct: int = 0
    pairs_total: int = 0


def _resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(a, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _names(cfg: EvalConfig, paths: list[Path]) -> list[str]:
    if cfg.names:
        if len(cfg.names) != len(paths):
            raise DepthcliError(f"{len(cfg.names)} names for {len(paths)} predictions", "give one --name per --pred")
        names = list(cfg.names)
    else:
        names = [p.resolve().name or str(p) for p in paths]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            n = f"{n}_{seen[n]}"
        else:
            seen[n] = 0
        out.append(n)
    return out


def evaluate(cfg: EvalConfig) -> EvalResult:
    """Evaluate every prediction of ``cfg`` against its GT; see the module docstring."""
    from depthcli.console import track, warn

    from depthcli.io.atomic import check_no_overlap

    cfg.validate()
    # Outputs never overlap an input (e.g. --report GT, --csv GT/dataset.json).
    check_no_overlap([*cfg.preds, cfg.gt, cfg.pairs, cfg.images], [cfg.report, cfg.csv])
    proto = resolve_protocol(cfg)
    pred_paths = expand_pred_paths(cfg.preds)
    if not pred_paths:
        raise DepthcliError("no prediction given", "pass PRED or --pred")
    gt_src = _Source(cfg.gt, "gt", proto["gt_scale"], "GT")
    models = [_Source(p, n, cfg.pred_scale, "prediction") for p, n in zip(pred_paths, _names(cfg, pred_paths))]
    states = []
    for m in models:
        kind = m.kind if cfg.pred_kind == "auto" else cfg.pred_kind
        states.append(_ModelState(m.name, kind))

    if cfg.align == "none" and gt_src.units in ("sfm", "affine"):
        warn(f"GT depth is in '{gt_src.units}' units but --align none compares values as they are (metric)")
    gt_keys = gt_src.keys()
    common = [k for k in gt_keys if all(k in m.files for m in models)]
    unmatched_gt = [k for k in gt_keys if k not in common]
    unmatched_pred = {m.name: [k for k in m.keys() if k not in gt_src.files] for m in models}
    n_unmatched = len(unmatched_gt) + sum(len(v) for v in unmatched_pred.values())
    if n_unmatched:
        parts = []
        if unmatched_gt:
            parts.append(f"{len(unmatched_gt)} GT frame(s) without a prediction of every model ({_short(unmatched_gt)})")
        for name, ks in unmatched_pred.items():
            if ks:
                parts.append(f"{len(ks)} prediction(s) of '{name}' without GT ({_short(ks)})")
        msg = "; ".join(parts)
        if cfg.strict:
            raise DepthcliError(f"unmatched frames: {msg}", "frames match by name/file stem; drop --strict to evaluate the matched ones")
        warn(f"unmatched frames, skipped: {msg}")
    if not common:
        raise DepthcliError(
            f"no frame of '{cfg.gt}' matches the predictions",
            "predictions and GT are matched by frame name or file stem (e.g. depth/0001.npy <-> pred/0001.npy)",
        )

    pairs = load_pairs(cfg.pairs) if cfg.pairs is not None else None
    multi = len(models) >= 2

    report_writer = None
    if cfg.report is not None:
        from depthcli.eval_report import ReportWriter

        report_writer = ReportWriter(cfg.report, [m.name for m in models], overwrite=cfg.overwrite, limit=cfg.report_limit)

    per_image: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    gt_nonfinite = 0
    resized = 0
    disputed_sum = 0.0
    disputed_images = 0
    total_valid = 0
    total_gt_pixels = 0
    crop_cache: dict[tuple[int, int], np.ndarray | None] = {}
    ctx = _ImageContext(cfg, proto, gt_src, models, [st.kind for st in states], pairs, crop_cache)

    try:
        for out in track(_map_ordered(ctx, common, report_writer), "evaluating", total=len(common)):
            total_gt_pixels += out.gt_pixels
            gt_nonfinite += out.gt_nonfinite
            resized += out.resized
            for st, (n_bad, bad_in) in zip(states, out.nonfinite):
                st.nonfinite_pixels += n_bad
                st.nonfinite_in_gt_valid += bad_in
            for st, (c, t) in zip(states, out.pairs):  # counted even when the GT has no valid pixel
                st.pairs_correct += c
                st.pairs_total += t
            if out.skip_reason is not None:
                skipped.append({"name": out.key, "reason": out.skip_reason})
                continue
            rec = out.rec
            total_valid += rec["valid_pixels"]
            for st, sums, extra in zip(states, out.sums, out.extras):
                st.pooled.add(sums)
                for k, v in sums.metrics().items():
                    st.mean_sum[k] = st.mean_sum.get(k, 0.0) + v
                st.images += 1
                if "boundary_f1" in extra:
                    st.boundary_sum += extra["boundary_f1"]
            if out.disputed_pairs:
                disputed_sum += rec["disputed_fraction"]
                disputed_images += 1
            if out.report is not None:
                report_writer.add(out.key, *out.report, rec)
            per_image.append(rec)

        rows = []
        for st in states:
            n = max(st.images, 1)
            mean = {k: v / n for k, v in st.mean_sum.items()} if st.images else {k: float("nan") for k in METRIC_NAMES}
            if cfg.boundary:
                mean["boundary_f1"] = st.boundary_sum / n if st.images else float("nan")
            if pairs is not None:
                mean["pairs_accuracy"] = st.pairs_correct / st.pairs_total if st.pairs_total else float("nan")
            if multi and cfg.agreement_pairs > 0:
                mean["disputed_fraction"] = disputed_sum / disputed_images if disputed_images else float("nan")
            rows.append({
                "name": st.name,
                "pred_kind": st.kind,
                "images": st.images,
                "valid_pixels": st.pooled.count,
                "nonfinite_pixels": st.nonfinite_pixels,
                "nonfinite_pixels_in_valid_gt": st.nonfinite_in_gt_valid,
                "pairs": {"correct": st.pairs_correct, "total": st.pairs_total} if pairs is not None else None,
                "metrics": mean,
                "metrics_pooled": st.pooled.metrics(),
            })
        proto.update({
            "gt": str(cfg.gt),
            "gt_units": gt_src.units,
            "predictions": {m.name: str(m.path) for m in models},
            "pred_kinds": {st.name: st.kind for st in states},
            "images_matched": len(common),
            "images_evaluated": len(per_image),
            "images_skipped": len(skipped),
            "skipped": skipped,
            "unmatched_gt": unmatched_gt,
            "unmatched_pred": unmatched_pred,
            "gt_pixels": total_gt_pixels,
            "valid_pixels": total_valid,
            "gt_nonfinite_pixels": gt_nonfinite,
            "pred_nonfinite_pixels": {st.name: st.nonfinite_pixels for st in states},
            "resized_predictions": resized,
            "boundary_f1": "Depth Pro SI boundary F1, t in linspace(1.05,1.25,10), weights t/sum(t), pairs with both pixels valid" if cfg.boundary else None,
            "pairs": str(cfg.pairs) if cfg.pairs is not None else None,
            "agreement": {"pairs_per_image": cfg.agreement_pairs, "seed": cfg.seed,
                          "rule": "a pair is disputed unless every model orders it the same way (aligned depth)"} if multi else None,
        })
        result = EvalResult(rows=rows, protocol=proto, per_image=per_image)
        if report_writer is not None:
            report_writer.close(result)
    except BaseException:
        if report_writer is not None:
            report_writer.abort()
        raise
    if skipped:
        warn(f"{len(skipped)} image(s) skipped: {_short([s['name'] + ' (' + s['reason'] + ')' for s in skipped])}")
    for st in states:
        if st.nonfinite_pixels:
            warn(f"'{st.name}': {st.nonfinite_pixels} NaN/Inf prediction pixels ({st.nonfinite_in_gt_valid} on valid GT, excluded from every model's mask)")
    return result


@dataclass
class _ImageContext:
    """Everything a worker needs to score one image (read-only while evaluating)."""

    cfg: EvalConfig
    proto: dict[str, Any]
    gt_src: _Source
    models: list[_Source]
    kinds: list[str]
    pairs: dict[str, list] | None
    crop_cache: dict[tuple[int, int], np.ndarray | None]


@dataclass
class _ImageOutcome:
    key: str
    gt_pixels: int = 0
    gt_nonfinite: int = 0
    resized: int = 0
    nonfinite: list[tuple[int, int]] = field(default_factory=list)  # per model: (all pixels, on valid GT)
    pairs: list[tuple[int, int]] = field(default_factory=list)  # per model: (correct, total) annotated pairs
    skip_reason: str | None = None
    rec: dict[str, Any] = field(default_factory=dict)
    sums: list[MetricSums] = field(default_factory=list)
    extras: list[dict[str, Any]] = field(default_factory=list)
    disputed_pairs: int = 0
    report: tuple | None = None  # (image, gt, valid, aligned maps, disputed map)


def _score_image(ctx: _ImageContext, key: str, want_report: bool) -> _ImageOutcome:
    """Read, mask, align and score one image for every model (runs in a worker thread)."""
    cfg, proto = ctx.cfg, ctx.proto
    min_d, max_d = proto["min_depth"], proto["max_depth"]
    out = _ImageOutcome(key)
    gt = ctx.gt_src.read(key)
    h, w = gt.shape
    out.gt_pixels = gt.size
    fin = np.isfinite(gt)
    out.gt_nonfinite = int(gt.size - np.count_nonzero(fin))
    if out.gt_nonfinite:
        gt = np.where(fin, gt, 0).astype(np.float32)
    valid = gt > min_d
    if max_d is not None:
        valid &= gt < max_d
    if (h, w) not in ctx.crop_cache:
        ctx.crop_cache[(h, w)] = crop_mask(proto["crop"], h, w)
    cm = ctx.crop_cache[(h, w)]
    if cm is not None:
        valid &= cm
    gt_valid_pixels = int(np.count_nonzero(valid))
    rec: dict[str, Any] = {"name": key, "gt_valid_pixels": gt_valid_pixels}
    preds = []
    for m in ctx.models:
        p = m.read(key)
        if p.shape != gt.shape:
            if not cfg.resize:
                raise DepthcliError(
                    f"prediction '{m.name}' of frame '{key}' is {p.shape[1]}x{p.shape[0]}, GT is {w}x{h}",
                    "pass --resize to resize predictions to the GT size (bilinear)",
                )
            p = _resize(p, gt.shape)
            out.resized += 1
        pfin = np.isfinite(p)
        n_bad = int(p.size - np.count_nonzero(pfin))
        bad_in = 0
        if n_bad:
            bad_in = int(np.count_nonzero(valid & ~pfin))
            rec[f"{m.name}/nonfinite_pixels"] = n_bad
            valid &= pfin
        out.nonfinite.append((n_bad, bad_in))
        preds.append(p)
    if ctx.pairs is not None:
        plist = ctx.pairs.get(key) or ctx.pairs.get(Path(key).name)
        if plist:
            from depthcli.metrics import ordinal_pair_correct

            for m, kind, p in zip(ctx.models, ctx.kinds, preds):
                c, t = ordinal_pair_correct(-p if kind == "disparity" else p, plist)  # larger disparity = nearer
                out.pairs.append((c, t))
                rec[f"{m.name}/pairs_accuracy"] = c / t if t else float("nan")
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        out.skip_reason = "no valid GT pixel" if gt_valid_pixels == 0 else "every valid GT pixel has a non-finite prediction"
        return out
    rec["valid_pixels"] = n_valid
    gv = gt[valid]
    aligned_maps = []
    alignments = []
    for m, kind, p in zip(ctx.models, ctx.kinds, preds):
        pv = p[valid]
        al = fit_alignment(pv, gv, cfg.align, kind, min_d, max_d)
        sums = MetricSums.of(al.apply(pv), gv)
        extra: dict[str, Any] = {}
        rec[m.name] = {"scale": al.scale, "shift": al.shift, **sums.metrics()}
        alignments.append(al)
        if cfg.boundary or want_report:
            aligned_maps.append(al.apply(np.where(np.isfinite(p), p, 0)))
        if cfg.boundary:
            extra["boundary_f1"] = rec[m.name]["boundary_f1"] = boundary_f1(aligned_maps[-1], gt, valid)["boundary_f1"]
        out.sums.append(sums)
        out.extras.append(extra)
    disputed_map = None
    if len(ctx.models) >= 2 and cfg.agreement_pairs > 0:
        rng = np.random.default_rng([cfg.seed, zlib.crc32(key.encode())])
        a, b = sample_pairs(valid, cfg.agreement_pairs, rng)
        na = a.size
        ab = np.concatenate([a, b])
        flat = [al.apply(p.ravel()[ab]) for al, p in zip(alignments, preds)]  # aligned depth at a then b
        d = disputed_pairs(flat, np.arange(na), np.arange(na, 2 * na))
        rec["disputed_fraction"] = float(d.mean()) if na else float("nan")
        out.disputed_pairs = na
        if want_report and na:
            disputed_map = _disputed_map(a, b, d, gt.shape)
    if want_report:
        image = ctx.gt_src.image(key)
        if image is None and cfg.images is not None:
            image = _find_image(cfg.images, key)
        out.report = (image, gt, valid, aligned_maps, disputed_map)
    out.rec = rec
    return out


def _map_ordered(ctx: _ImageContext, keys: list[str], report_writer) -> Iterator[_ImageOutcome]:
    """Score images on ``cfg.workers`` threads (numpy releases the GIL), yielding in
    input order; at most ``2 * workers`` images are in flight, so memory stays flat."""
    import os
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    workers = ctx.cfg.workers or min(4, os.cpu_count() or 1)
    wants = (lambda i: report_writer.wants(i)) if report_writer is not None else (lambda i: False)
    if workers <= 1:
        for i, key in enumerate(keys):
            yield _score_image(ctx, key, wants(i))
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="depthcli-eval") as pool:
        pending: deque = deque()
        it = iter(enumerate(keys))
        try:
            for i, key in it:
                pending.append(pool.submit(_score_image, ctx, key, wants(i)))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def tune_allocator(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Keep freed image-sized buffers in the process heap (glibc only; returns success).

    glibc serves each new array above ~128 KiB with a fresh ``mmap`` and returns
    it on ``free``, so every per-image temporary page-faults again: that costs
    more than the arithmetic of the metrics (measured 4x on MetricSums). Raising
    ``M_MMAP_THRESHOLD`` / ``M_TRIM_THRESHOLD`` makes the same pages serve every
    image; memory stays flat (bounded by one image's working set), it is just not
    handed back to the OS before the process ends. Process-wide, so only the
    ``depthcli eval`` command (a short-lived process) and the benchmark call it;
    :func:`evaluate` itself never changes process state.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
        return bool(libc.mallopt(m_mmap_threshold, int(mmap_threshold))) and bool(libc.mallopt(m_trim_threshold, int(trim_threshold)))
    except (OSError, AttributeError):
        return False


def _short(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n})" if len(items) > n else "")


def _disputed_map(a: np.ndarray, b: np.ndarray, disputed: np.ndarray, shape: tuple[int, int], cell: int = 16) -> np.ndarray:
    """Fraction of sampled pairs touching each ``cell`` x ``cell`` block that are disputed (NaN: none)."""
    h, w = shape
    gh, gw = (h + cell - 1) // cell, (w + cell - 1) // cell
    idx = np.concatenate([a, b])
    dd = np.concatenate([disputed, disputed]).astype(np.float64)
    cells = (idx // w) // cell * gw + (idx % w) // cell
    tot = np.bincount(cells, minlength=gh * gw).astype(np.float64)
    dis = np.bincount(cells, weights=dd, minlength=gh * gw)
    frac = np.full(gh * gw, np.nan)
    frac[tot > 0] = dis[tot > 0] / tot[tot > 0]
    return np.kron(frac.reshape(gh, gw), np.ones((cell, cell)))[:h, :w]


def _find_image(folder: Path, key: str) -> np.ndarray | None:
    from depthcli.io.images import IMAGE_SUFFIXES, read_image_rgb

    for suf in IMAGE_SUFFIXES:
        p = Path(folder) / f"{key}{suf}"
        if p.is_file():
            return read_image_rgb(p)
    return None


def iter_rows_csv(result: EvalResult) -> Iterator[list[Any]]:
    """CSV rows: a header, then one row per (model, averaging) with the protocol columns."""
    proto_cols = ["preset", "align", "align_space", "disparity_clamp", "min_depth", "max_depth", "crop",
                  "gt_scale", "resize", "images_evaluated", "images_skipped", "gt_nonfinite_pixels"]
    extra = [k for k in ("boundary_f1", "pairs_accuracy", "disputed_fraction") if any(k in r["metrics"] for r in result.rows)]
    yield ["model", "averaging", "pred_kind", "images", "valid_pixels", "nonfinite_pixels", "nonfinite_pixels_in_valid_gt"] + list(METRIC_NAMES) + extra + proto_cols
    for r in result.rows:
        for avg, mets in (("image_mean", r["metrics"]), ("pixel_pooled", r["metrics_pooled"])):
            yield ([r["name"], avg, r["pred_kind"], r["images"], r["valid_pixels"], r["nonfinite_pixels"], r["nonfinite_pixels_in_valid_gt"]]
                   + [mets.get(k, "") for k in METRIC_NAMES + tuple(extra)]
                   + [result.protocol.get(c) for c in proto_cols])


def write_csv(result: EvalResult, path: Path, overwrite: bool = False) -> None:
    """Write the summary CSV atomically (refuses an existing file without ``overwrite``)."""
    import csv
    import io

    from depthcli.io.atomic import atomic_write_text

    path = Path(path)
    if path.exists() and not overwrite:
        raise DepthcliError(f"CSV '{path}' already exists", "pass --overwrite to replace it")
    buf = io.StringIO()
    wr = csv.writer(buf)
    for row in iter_rows_csv(result):
        wr.writerow(["" if v is None else v for v in row])
    atomic_write_text(path, buf.getvalue(), replace=overwrite)  # a CSV appearing meanwhile is never replaced
