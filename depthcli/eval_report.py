"""``depthcli eval --report DIR``: per-image pictures and one HTML summary page.

Per image, one PNG grid: the RGB image (when known) and the GT on the first
row, then one row per model with its aligned prediction and its AbsRel error
map. GT and predictions share one colour scale (1st-99th percentile of the
image's valid GT depth, near = bright); error maps use |pred - gt| / gt on
[0, 0.3] (turbo). With several models, a map of disputed regions (share of
sampled point pairs on which the models disagree, 16 px cells) is added.
The folder appears complete or not at all (``atomic_output_dir``).
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

TILE_WIDTH = 480  #: tiles are downscaled to at most this width
ERROR_MAX = 0.3  #: AbsRel at which the error colour map saturates


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = tile.copy()
    cv2.rectangle(out, (0, 0), (min(out.shape[1], 8 + 9 * len(text)), 22), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _fit(tile: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    if tile.shape[:2] != (h, w):
        tile = cv2.resize(tile, (w, h), interpolation=cv2.INTER_AREA)
    return tile


def render_grid(
    image: np.ndarray | None,
    gt: np.ndarray,
    valid: np.ndarray,
    aligned: list[np.ndarray],
    names: list[str],
    disputed: np.ndarray | None = None,
) -> np.ndarray:
    """The picture of one image as an RGB uint8 array (see the module docstring)."""
    from depthcli.io.previews import colorize_depth, colorize_values

    H, W = gt.shape
    s = min(1.0, TILE_WIDTH / W)
    h, w = max(1, int(round(H * s))), max(1, int(round(W * s)))
    v = gt[valid]
    lo, hi = (float(np.percentile(v, 1)), float(np.percentile(v, 99))) if v.size else (1.0, 2.0)
    blank = np.zeros((h, w, 3), np.uint8)
    ncol = 3 if disputed is not None else 2
    gt_shown = np.where(valid, gt, 0).astype(np.float32)
    first = [
        _label(_fit(image, h, w), "image") if image is not None else _label(blank, "no image"),
        _label(_fit(colorize_depth(gt_shown, lo, hi), h, w), f"GT {lo:.3g}..{hi:.3g}"),
    ]
    if disputed is not None:
        dm = np.isfinite(disputed)
        first.append(_label(_fit(colorize_values(np.nan_to_num(disputed), dm, 0.0, 1.0, "viridis"), h, w), "disputed pairs 0..1"))
    rows = [first]
    for name, d in zip(names, aligned):
        err = np.zeros_like(gt, dtype=np.float64)
        err[valid] = np.abs(d[valid] - gt[valid]) / gt[valid]
        row = [
            _label(_fit(colorize_depth(d.astype(np.float32), lo, hi), h, w), name),
            _label(_fit(colorize_values(err, valid, 0.0, ERROR_MAX, "turbo"), h, w), f"{name} AbsRel 0..{ERROR_MAX}"),
        ]
        rows.append(row + [blank] * (ncol - len(row)))
    return np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)


class ReportWriter:
    """Streams per-image pictures into a temporary folder; ``close`` publishes it."""

    def __init__(self, folder: Path, names: list[str], overwrite: bool = False, limit: int = 20):
        from depthcli.io.atomic import atomic_output_dir

        self.folder = Path(folder)
        self.names = names
        self.limit = limit
        self._cm = atomic_output_dir(self.folder, overwrite, what="eval")
        self.tmp = self._cm.__enter__()
        (self.tmp / "images").mkdir()
        self.entries: list[tuple[str, str]] = []

    def wants(self, index: int) -> bool:
        """Whether the ``index``-th evaluated image gets a picture."""
        return index < self.limit

    def add(self, key, image, gt, valid, aligned, disputed, record: dict[str, Any]) -> None:
        from depthcli.io.dataset import safe_stem
        from depthcli.io.images import write_image_rgb

        rel = f"images/{safe_stem(key)}_{len(self.entries):04d}.png"
        write_image_rgb(self.tmp / rel, render_grid(image, gt, valid, aligned, self.names, disputed))
        self.entries.append((key, rel))

    def close(self, result) -> None:
        (self.tmp / "metrics.json").write_text(json.dumps(_jsonable(result.to_json()), indent=1))
        (self.tmp / "index.html").write_text(_html(result, self.entries))
        self._cm.__exit__(None, None, None)

    def abort(self) -> None:
        exc = sys.exc_info()[1]
        try:
            if exc is None:
                exc = RuntimeError("aborted")
            self._cm.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException:  # the context manager re-raises; the caller raises anyway
            pass


def _jsonable(v: Any) -> Any:
    from depthcli.console import _jsonable as j

    return j(v)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else html.escape(str(v))


def _html(result, entries: list[tuple[str, str]]) -> str:
    cols, rows = result.table()
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    per = {r["name"]: r for r in result.per_image}
    figs = []
    for key, rel in entries:
        rec = per.get(key, {})
        cap = "; ".join(
            f"{html.escape(n)}: AbsRel {rec[n]['abs_rel']:.4g}, delta1 {rec[n]['delta1']:.4g}"
            for n in result.protocol.get("predictions", {}) if isinstance(rec.get(n), dict)
        )
        figs.append(f'<figure><img src="{rel}" alt="{html.escape(key)}"><figcaption>{html.escape(key)} '
                    f'({rec.get("valid_pixels", 0)} valid px) {cap}</figcaption></figure>')
    proto = html.escape(json.dumps(_jsonable({k: v for k, v in result.protocol.items() if k not in ("skipped",)}), indent=1))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>depthcli eval</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 6px;border-bottom:1px solid #ccc}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>depthcli eval</h1><table><tr>{head}</tr>{body}</table>"
        f"<h2>Protocol</h2><pre>{proto}</pre><h2>Images</h2>{''.join(figs)}</body></html>"
    )
