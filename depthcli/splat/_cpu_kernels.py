"""numba kernels of the compiled CPU rasteriser (:mod:`depthcli.splat.backend_cpu`).

Imported only when that backend runs (numba is a heavy import). Every kernel is
compiled once for float32 arrays and int64 scalars and cached on disk.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

TILE = 16
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
#: relative and absolute slack on the bounding box of the alpha >= 1/255 ellipse
BOX_SLACK_REL = 1e-3
BOX_SLACK_PX = 0.01
#: the same for the per-row column spans walked inside a tile
SPAN_SLACK_REL = 1e-3
SPAN_SLACK_PX = 0.02

f32 = np.float32
alpha_min = f32(ALPHA_MIN)
alpha_max = f32(ALPHA_MAX)
t_min = f32(T_MIN)
#: pairs with sigma above log(255 o) + this are skipped before the (exact) alpha test
lim_slack = f32(1e-3)



@njit(cache=True)
def tile_boxes(order, mx, my, sxx, syy, opac, width, height, n_tiles_x, n_tiles_y):
    """Tile box [tx0, tx1) x [ty0, ty1) of each Gaussian in ``order`` (empty: tx1 <= tx0)."""
    n = order.shape[0]
    box = np.zeros((n, 4), dtype=np.int32)
    for i in range(n):
        g = order[i]
        o = opac[g]
        if not (o * f32(255.0) > f32(1.0)):
            continue
        two_l = 2.0 * math.log(float(o) * 255.0)
        two_l = two_l * (1.0 + BOX_SLACK_REL) + 1e-6
        ex = math.sqrt(two_l * max(float(sxx[g]), 0.0)) * (1.0 + BOX_SLACK_REL) + BOX_SLACK_PX
        ey = math.sqrt(two_l * max(float(syy[g]), 0.0)) * (1.0 + BOX_SLACK_REL) + BOX_SLACK_PX
        cx, cy = float(mx[g]), float(my[g])
        # pixel centres col + 0.5 within [cx - ex, cx + ex]
        c0 = max(math.ceil(cx - ex - 0.5), 0.0)
        c1 = min(math.floor(cx + ex - 0.5), width - 1.0)
        r0 = max(math.ceil(cy - ey - 0.5), 0.0)
        r1 = min(math.floor(cy + ey - 0.5), height - 1.0)
        if c1 < c0 or r1 < r0:
            continue
        box[i, 0] = int(c0) // TILE
        box[i, 1] = int(c1) // TILE + 1
        box[i, 2] = int(r0) // TILE
        box[i, 3] = int(r1) // TILE + 1
    return box

@njit(cache=True)
def bin_tiles(order, cams, box, n_tiles_x, n_tiles_per_cam, n_cams):
    """Per-tile Gaussian lists: ``offsets`` [C * tiles + 1] into ``ids`` (flat Gaussian
    ids, each tile's list in the order of ``order``, i.e. front to back)."""
    n_tiles = n_cams * n_tiles_per_cam
    counts = np.zeros(n_tiles + 1, dtype=np.int64)
    n = order.shape[0]
    for i in range(n):
        base = cams[i] * n_tiles_per_cam
        for ty in range(box[i, 2], box[i, 3]):
            for tx in range(box[i, 0], box[i, 1]):
                counts[base + ty * n_tiles_x + tx + 1] += 1
    for t in range(n_tiles):
        counts[t + 1] += counts[t]
    ids = np.empty(counts[n_tiles], dtype=np.int64)
    cursor = counts[:n_tiles].copy()
    for i in range(n):
        base = cams[i] * n_tiles_per_cam
        for ty in range(box[i, 2], box[i, 3]):
            for tx in range(box[i, 0], box[i, 1]):
                t = base + ty * n_tiles_x + tx
                ids[cursor[t]] = order[i]
                cursor[t] += 1
    return counts, ids

@njit(cache=True, inline="always")
def row_range(my, a, b, c, lim, r_lo, r_hi):
    """Rows in [r_lo, r_hi) whose pixel centres may lie in the ellipse sigma <= lim."""
    det = float(a) * float(c) - float(b) * float(b)
    if not (det > 0.0 and a > 0):
        return r_lo, r_hi
    ls = float(lim) * (1.0 + SPAN_SLACK_REL) + SPAN_SLACK_REL
    ey = math.sqrt(2.0 * ls * float(a) / det) * (1.0 + SPAN_SLACK_REL) + SPAN_SLACK_PX
    r0 = max(int(math.ceil(float(my) - ey - 0.5)), r_lo)
    r1 = min(int(math.floor(float(my) + ey - 0.5)) + 1, r_hi)
    return r0, r1

@njit(cache=True, inline="always")
def col_box(mx, a, b, c, lim, c_lo, c_hi):
    """Columns in [c_lo, c_hi) whose pixel centres may lie in the ellipse sigma <= lim."""
    det = float(a) * float(c) - float(b) * float(b)
    if not (det > 0.0 and a > 0):
        return c_lo, c_hi
    ls = float(lim) * (1.0 + SPAN_SLACK_REL) + SPAN_SLACK_REL
    ex = math.sqrt(2.0 * ls * float(c) / det) * (1.0 + SPAN_SLACK_REL) + SPAN_SLACK_PX
    c0 = max(int(math.ceil(float(mx) - ex - 0.5)), c_lo)
    c1 = min(int(math.floor(float(mx) + ex - 0.5)) + 1, c_hi)
    return c0, c1


@njit(cache=True, inline="always")
def col_range(row, mx, my, a, b, c, lim, c_lo, c_hi):
    """Columns in [c_lo, c_hi) of ``row`` whose pixel centres may lie in sigma <= lim."""
    fa = float(a)
    if not (fa > 0.0 and float(a) * float(c) - float(b) * float(b) > 0.0):
        return c_lo, c_hi
    ls = float(lim) * (1.0 + SPAN_SLACK_REL) + SPAN_SLACK_REL
    dy = row + 0.5 - float(my)
    disc = (float(b) * float(b) - fa * float(c)) * dy * dy + 2.0 * fa * ls
    if disc < 0.0:
        return c_lo, c_lo
    half = math.sqrt(disc) / fa
    half = half * (1.0 + SPAN_SLACK_REL) + SPAN_SLACK_PX
    centre = float(mx) - float(b) * dy / fa
    c0 = max(int(math.ceil(centre - half - 0.5)), c_lo)
    c1 = min(int(math.floor(centre + half - 0.5)) + 1, c_hi)
    return c0, c1

@njit(parallel=True, cache=True, fastmath=False)
def forward(offsets, ids, mx, my, ca, cb, cc, opac, feats, width, height, n_tiles_x, n_tiles_per_cam,
            out, acc, t_final, last, n_pairs):
    """Front-to-back compositing, one tile per task. ``out`` [C*H*W, F], ``acc``,
    ``t_final`` [C*H*W] (float32), ``last`` [C*H*W] (int64: index into ``ids`` of the
    pixel's last composited Gaussian, -1 if none), ``n_pairs`` [tiles] (pairs composited).

    Within a tile the Gaussians are taken front to back and each one visits only the
    tile pixels of its (enlarged) alpha >= 1/255 ellipse, row span by row span; every
    visited pixel applies the exact rules. Per pixel this is the same front-to-back
    sequence as walking the whole list."""
    n_tiles = offsets.shape[0] - 1
    F = feats.shape[1]
    hw = height * width
    for t in prange(n_tiles):
        s, e = offsets[t], offsets[t + 1]
        cam = t // n_tiles_per_cam
        tl = t - cam * n_tiles_per_cam
        ty, tx = tl // n_tiles_x, tl % n_tiles_x
        r_lo, c_lo = ty * TILE, tx * TILE
        r_hi, c_hi = min(r_lo + TILE, height), min(c_lo + TILE, width)
        tw = c_hi - c_lo
        n_px = (r_hi - r_lo) * tw
        T = np.ones(n_px, dtype=np.float32)
        wsum = np.zeros(n_px, dtype=np.float32)
        accf = np.zeros((n_px, F), dtype=np.float32)
        lastk = np.full(n_px, -1, dtype=np.int64)
        done = np.zeros(n_px, dtype=np.bool_)
        n_done = 0
        count = 0
        for k in range(s, e):
            if n_done == n_px:
                break
            g = ids[k]
            o = opac[g]
            if not (o * np.float32(255.0) > np.float32(1.0)):
                continue
            lim = np.float32(math.log(o * np.float32(255.0))) + lim_slack
            gx, gy, a, b, c = mx[g], my[g], ca[g], cb[g], cc[g]
            r0, r1 = row_range(gy, a, b, c, lim, r_lo, r_hi)
            c0, c1 = col_box(gx, a, b, c, lim, c_lo, c_hi)
            for row in range(r0, r1):
                dy = np.float32(row) + np.float32(0.5) - gy
                base = (row - r_lo) * tw - c_lo
                for col in range(c0, c1):
                    q = base + col
                    if done[q]:
                        continue
                    dx = np.float32(col) + np.float32(0.5) - gx
                    sigma = np.float32(0.5) * (a * dx * dx + c * dy * dy) + b * dx * dy
                    if sigma < 0 or sigma > lim:
                        continue
                    alpha = min(alpha_max, o * np.float32(math.exp(-sigma)))
                    if alpha < alpha_min:
                        continue
                    Tq = T[q]
                    t_next = Tq * (np.float32(1.0) - alpha)
                    if t_next <= t_min:
                        done[q] = True
                        n_done += 1
                        continue
                    w = alpha * Tq
                    for f in range(F):
                        accf[q, f] += w * feats[g, f]
                    wsum[q] += w
                    T[q] = t_next
                    lastk[q] = k
                    count += 1
        for row in range(r_lo, r_hi):
            for col in range(c_lo, c_hi):
                q = (row - r_lo) * tw + col - c_lo
                pix = cam * hw + row * width + col
                for f in range(F):
                    out[pix, f] = accf[q, f]
                acc[pix] = wsum[q]
                t_final[pix] = T[q]
                last[pix] = lastk[q]
        n_pairs[t] = count

@njit(parallel=True, cache=True, fastmath=False)
def backward(offsets, ids, mx, my, ca, cb, cc, opac, feats, width, height, n_tiles_x, n_tiles_per_cam,
             t_final, last, g_out, g_acc, slots):
    """Back-to-front gradients, one tile per task. ``slots`` [len(ids), 6 + F]: per
    intersection dL/d(mx, my, a, b, c, o, f...). The tile's Gaussians are taken back
    to front from the last one any pixel composited; each pixel only takes those at or
    before its own last one, recovering ``T`` by division and keeping the suffix sum."""
    n_tiles = offsets.shape[0] - 1
    F = feats.shape[1]
    hw = height * width
    for t in prange(n_tiles):
        s, e = offsets[t], offsets[t + 1]
        if e == s:
            continue
        cam = t // n_tiles_per_cam
        tl = t - cam * n_tiles_per_cam
        ty, tx = tl // n_tiles_x, tl % n_tiles_x
        r_lo, c_lo = ty * TILE, tx * TILE
        r_hi, c_hi = min(r_lo + TILE, height), min(c_lo + TILE, width)
        tw = c_hi - c_lo
        n_px = (r_hi - r_lo) * tw
        T = np.empty(n_px, dtype=np.float32)
        S = np.zeros(n_px, dtype=np.float32)
        lastk = np.empty(n_px, dtype=np.int64)
        ga = np.empty(n_px, dtype=np.float32)
        gf = np.empty((n_px, F), dtype=np.float32)
        k_max = -1
        for row in range(r_lo, r_hi):
            for col in range(c_lo, c_hi):
                q = (row - r_lo) * tw + col - c_lo
                pix = cam * hw + row * width + col
                T[q] = t_final[pix]
                lastk[q] = last[pix]
                k_max = max(k_max, last[pix])
                ga[q] = g_acc[pix]
                for f in range(F):
                    gf[q, f] = g_out[pix, f]
        gsum = np.empty(6 + F, dtype=np.float32)
        for k in range(k_max, s - 1, -1):
            g = ids[k]
            o = opac[g]
            if not (o * np.float32(255.0) > np.float32(1.0)):
                continue
            lim = np.float32(math.log(o * np.float32(255.0))) + lim_slack
            gx, gy, a, b, c = mx[g], my[g], ca[g], cb[g], cc[g]
            for j in range(6 + F):
                gsum[j] = 0.0
            hit = False
            r0, r1 = row_range(gy, a, b, c, lim, r_lo, r_hi)
            c0, c1 = col_box(gx, a, b, c, lim, c_lo, c_hi)
            for row in range(r0, r1):
                dy = np.float32(row) + np.float32(0.5) - gy
                base = (row - r_lo) * tw - c_lo
                for col in range(c0, c1):
                    q = base + col
                    if k > lastk[q]:
                        continue
                    dx = np.float32(col) + np.float32(0.5) - gx
                    sigma = np.float32(0.5) * (a * dx * dx + c * dy * dy) + b * dx * dy
                    if sigma < 0 or sigma > lim:
                        continue
                    G = np.float32(math.exp(-sigma))
                    raw = o * G
                    alpha = min(alpha_max, raw)
                    if alpha < alpha_min:
                        continue
                    hit = True
                    one_m = np.float32(1.0) - alpha
                    Tq = T[q] / one_m  # transmittance before this Gaussian
                    T[q] = Tq
                    w = alpha * Tq
                    gdot = ga[q]
                    for f in range(F):
                        gdot += gf[q, f] * feats[g, f]
                        gsum[6 + f] += w * gf[q, f]
                    g_alpha = Tq * gdot - S[q] / one_m
                    S[q] += w * gdot
                    if raw < alpha_max:
                        gsum[5] += g_alpha * G
                        g_sigma = -g_alpha * alpha
                        gsum[0] -= g_sigma * (a * dx + b * dy)
                        gsum[1] -= g_sigma * (c * dy + b * dx)
                        gsum[2] += np.float32(0.5) * g_sigma * dx * dx
                        gsum[3] += g_sigma * dx * dy
                        gsum[4] += np.float32(0.5) * g_sigma * dy * dy
            if hit:
                for j in range(6 + F):
                    slots[k, j] = gsum[j]

@njit(cache=True)
def reduce_slots(ids, slots, n_gauss):
    """Sum the per-intersection gradients per Gaussian (fixed order: deterministic)."""
    out = np.zeros((n_gauss, slots.shape[1]), dtype=np.float32)
    for p in range(ids.shape[0]):
        g = ids[p]
        for j in range(slots.shape[1]):
            out[g, j] += slots[p, j]
    return out
