"""splat-train's curves.png: drawn where the numbers say."""

import numpy as np

from depthcli.splat.curves import BLUE, MARGIN_L, MARGIN_T, PANEL_H, PANEL_W, MARGIN_B, MARGIN_R, curves_image


def _blue_rows(panel):
    mask = np.all(panel == np.array(BLUE, np.uint8), axis=-1)
    cols = {}
    for y, x in zip(*np.nonzero(mask)):
        cols.setdefault(x, []).append(y)
    return cols


def test_a_falling_loss_is_drawn_falling_and_heldout_panel_appears():
    hist = [{"step": s, "loss": 10.0 ** (-s / 300)} for s in range(10, 1210, 10)]
    img = curves_image(hist)
    assert img.shape == (PANEL_H, 2 * PANEL_W, 3)
    cols = _blue_rows(img[:, :PANEL_W])
    xs = sorted(x for x in cols if MARGIN_L + 2 < x < PANEL_W - MARGIN_R - 2)
    first, last = np.mean(cols[xs[0]]), np.mean(cols[xs[-1]])
    assert first < MARGIN_T + 10 and last > PANEL_H - MARGIN_B - 10  # top-left to bottom-right
    # log scale: a straight line for an exponential decay (the midpoint is mid-height)
    mid = xs[len(xs) // 2]
    assert abs(np.mean(cols[mid]) - (first + last) / 2) < 6
    assert not _blue_rows(img[:, PANEL_W:])  # no held-out evaluation: blank right panel
    hist[-1]["heldout"] = {"abs_rel": 0.02, "coverage": 0.99}
    hist[50]["heldout"] = {"abs_rel": 0.04, "coverage": 0.9}
    assert _blue_rows(curves_image(hist)[:, PANEL_W:])
