"""``curves.png`` of a splat-train job, drawn with Pillow.

matplotlib (~25 MiB resident) or OpenCV (~15 MiB, not otherwise loaded by a CPU
training run) imported at the very end of a run, while the training state is still
held, set the whole run's peak memory; Pillow's drawing costs a few MiB. Two panels: the training loss (log scale) and, when held-out views exist, the
held-out AbsRel (log scale, circles) and coverage (linear 0-1, squares).
"""

from __future__ import annotations

import math

import numpy as np

PANEL_W, PANEL_H = 500, 350
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 70, 60, 34, 42
BLUE, ORANGE, GREY, BLACK = (31, 119, 180), (255, 127, 14), (200, 200, 200), (0, 0, 0)  # RGB


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    if len(ticks) < 3:  # less than a decade: also 2x and 5x
        ticks = sorted(t * m for t in ticks for m in (1, 2, 5))
    return [t for t in ticks if lo <= t <= hi]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _panel(title: str, x: list[float], series: list[tuple[list[float], str, tuple, str]]) -> np.ndarray:
    """One chart; each series is (values, "log" | "unit", colour, marker: "" | "o" | "s")."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (PANEL_W, PANEL_H), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    small, big = _font(11), _font(13)
    x0, x1 = MARGIN_L, PANEL_W - MARGIN_R
    y0, y1 = MARGIN_T, PANEL_H - MARGIN_B
    draw.text((x0, 10), title, fill=BLACK, font=big)
    xs = np.asarray(x, float)
    xlo, xhi = float(xs.min()), float(xs.max())
    xhi = xhi if xhi > xlo else xlo + 1
    px = lambda v: x0 + (v - xlo) / (xhi - xlo) * (x1 - x0)  # noqa: E731
    for t in np.linspace(xlo, xhi, 5):
        draw.text((px(t), y1 + 6), f"{t:.0f}", fill=BLACK, font=small, anchor="ma")
    draw.text(((x0 + x1) / 2, y1 + 22), "step", fill=BLACK, font=big, anchor="ma")
    for n, (vals, scale, colour, marker) in enumerate(series):
        v = np.asarray(vals, float)
        ok = np.isfinite(v) & ((v > 0) if scale == "log" else np.ones_like(v, bool))
        if not ok.any():
            continue
        if scale == "log":
            lo, hi = float(v[ok].min()), float(v[ok].max())
            lo, hi = (lo / 1.5, hi * 1.5) if hi / lo < 10 else (lo, hi)
            tf = lambda u, lo=lo, hi=hi: (math.log10(u) - math.log10(lo)) / max(math.log10(hi) - math.log10(lo), 1e-12)  # noqa: E731
            ticks = _log_ticks(lo, hi)
        else:
            tf = lambda u: u / 1.02  # noqa: E731
            ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
        py = lambda u, tf=tf: y1 - tf(u) * (y1 - y0)  # noqa: E731
        left = n == 0
        for t in ticks:
            yy = py(t)
            if left:
                draw.line([(x0, yy), (x1, yy)], fill=GREY, width=1)
                draw.text((x0 - 6, yy), f"{t:g}", fill=BLACK, font=small, anchor="rm")
            else:
                draw.text((x1 + 6, yy), f"{t:g}", fill=colour, font=small, anchor="lm")
        pts = [(float(px(a)), float(py(b))) for a, b in zip(xs[ok], v[ok])]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=1)
        for a, b in pts:
            if marker == "o":
                draw.ellipse([a - 4, b - 4, a + 4, b + 4], fill=colour)
            elif marker == "s":
                draw.rectangle([a - 3, b - 3, a + 3, b + 3], fill=colour)
    draw.rectangle([x0, y0, x1, y1], outline=BLACK, width=1)
    return np.asarray(im)


def curves_image(history: list[dict]) -> np.ndarray:
    """RGB image of the loss panel and the held-out panel (blank when there was no evaluation)."""
    steps = [h["step"] for h in history]
    left = _panel("training loss (one view per step, log)", steps, [([h["loss"] for h in history], "log", BLUE, "")])
    ev = [h for h in history if "heldout" in h]
    if ev:
        right = _panel("held-out AbsRel (o, log, left) / coverage (s, right)", [h["step"] for h in ev], [
            ([h["heldout"]["abs_rel"] for h in ev], "log", BLUE, "o"),
            ([h["heldout"]["coverage"] for h in ev], "unit", ORANGE, "s")])
    else:
        right = np.full_like(left, 255)
    return np.concatenate([left, right], axis=1)


def write_curves(path, history: list[dict], atomic_write) -> None:
    """Write ``curves.png`` (atomically)."""
    from PIL import Image

    img = Image.fromarray(curves_image(history))

    def _write(p):
        img.save(str(p), format="PNG")

    atomic_write(path, _write)
