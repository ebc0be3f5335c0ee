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



@njit(parallel=True, cache=True)
def tile_boxes(order, mx, my, sxx, syy, opac, width, height, n_tiles_x, n_tiles_y):
    """Tile box [tx0, tx1) x [ty0, ty1) of each Gaussian in ``order`` (empty: tx1 <= tx0)."""
    n = order.shape[0]
    box = np.zeros((n, 4), dtype=np.int32)
    for i in prange(n):
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


#: constants of exp_neg (Cody-Waite split of ln 2; Taylor coefficients of exp)
LOG2E = f32(1.4426950408889634)
LN2_HI = f32(0.693145751953125)
LN2_LO = f32(1.4286068203094172e-06)
HALF = f32(0.5)
ONE = f32(1.0)
ZERO = f32(0.0)
#: sigma is clamped to [0, SIGMA_CLAMP] before exp_neg (only sigma <= log(255) matters)
SIGMA_CLAMP = f32(8.0)
C2, C3, C4, C5, C6, C7 = (f32(1.0 / 2), f32(1.0 / 6), f32(1.0 / 24), f32(1.0 / 120), f32(1.0 / 720),
                          f32(1.0 / 5040))


@njit(cache=True, inline="always")
def exp_neg(s):
    """``exp(-s)`` in float32 for ``s`` in [0, 8] (relative error a few 1e-8): ``s = n ln2 + r``
    with ``|r| <= ln2 / 2``, a degree-7 polynomial for ``exp(-r)`` and ``2^-n`` from
    exact power-of-two factors. Branch-free (selects only), so that LLVM can vectorise
    the pixel loops that call it."""
    n = np.int32(s * LOG2E + HALF)
    nf = np.float32(n)
    r = (nf * LN2_HI - s) + nf * LN2_LO  # -(s - n ln2), in [-ln2/2, ln2/2]
    p = ONE + r * (ONE + r * (C2 + r * (C3 + r * (C4 + r * (C5 + r * (C6 + r * C7))))))
    b8 = nf >= f32(8.0)
    p = p * (f32(1.0 / 256.0) if b8 else ONE)
    nf = nf - (f32(8.0) if b8 else ZERO)
    b4 = nf >= f32(4.0)
    p = p * (f32(1.0 / 16.0) if b4 else ONE)
    nf = nf - (f32(4.0) if b4 else ZERO)
    b2 = nf >= f32(2.0)
    p = p * (f32(0.25) if b2 else ONE)
    nf = nf - (f32(2.0) if b2 else ZERO)
    return p * (HALF if nf >= ONE else ONE)


#: pixels of a tile's state arrays (always TILE x TILE; a row starts at a multiple of TILE)
_NPX = TILE * TILE
#: Vectorisation notes (LLVM's loop vectoriser, through numba): the pixel loops index with
#: unsigned integers (numba's negative-index wrap-around on a signed index blocks it),
#: combine conditions as int32 masks and select with every load done unconditionally
#: (no branch, no conditional load), and run to a run-time column count (a constant 16
#: gets fully unrolled before the vectoriser runs).


@njit(parallel=True, cache=True, fastmath=False)
def forward(offsets, ids, mx, my, ca, cb, cc, opac, feats, width, height, n_tiles_x, n_tiles_per_cam,
            out, acc, t_final, last, n_pairs):
    """Front-to-back compositing, one tile per task. ``out`` [C*H*W, F], ``acc``,
    ``t_final`` [C*H*W] (float32), ``last`` [C*H*W] (int64: index into ``ids`` of the
    pixel's last composited Gaussian, -1 if none), ``n_pairs`` [tiles] (pairs composited).

    Within a tile the Gaussians are taken front to back and each one visits the rows
    of the bounding box of its (enlarged) alpha >= 1/255 ellipse; every row is walked
    as a whole tile row with the exact rules written as masks (no branch, no dependency
    between pixels, unsigned indices), so that LLVM vectorises it. Per pixel this is
    the same front-to-back sequence as walking the whole list."""
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
        nc = c_hi - c_lo
        n_px = (r_hi - r_lo) * nc
        Tb = np.ones(_NPX, dtype=np.float32)
        Wb = np.zeros(_NPX, dtype=np.float32)
        Lb = np.ones(_NPX, dtype=np.float32)
        wrow = np.zeros(TILE, dtype=np.float32)
        accf = np.zeros((F, _NPX), dtype=np.float32)
        lastk = np.full(_NPX, -1, dtype=np.int32)
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
            if c1 <= c0:
                continue
            kk = np.int32(k - s)
            x0 = np.float32(c_lo) + HALF - gx
            ha = HALF * a
            for row in range(r0, r1):
                dy = np.float32(row) + HALF - gy
                base = (row - r_lo) * TILE
                cdy = HALF * c * dy * dy
                bdy = b * dy
                n_stop = np.int32(0)
                n_comp = np.int32(0)
                for j in range(nc):
                    q = np.uint64(base + j)
                    dx = x0 + np.float32(j)
                    sigma = (ha * dx * dx + cdy) + bdy * dx
                    sc = min(max(sigma, ZERO), SIGMA_CLAMP)
                    alpha = min(alpha_max, o * exp_neg(sc))
                    Tq = Tb[q]
                    lv = Lb[q]
                    lk = lastk[q]
                    tn = Tq * (ONE - alpha)
                    hit = (np.int32(sigma >= ZERO) & np.int32(sigma <= lim) & np.int32(alpha >= alpha_min)
                           & np.int32(lv > ZERO))
                    stop = hit & np.int32(tn <= t_min)
                    comp = hit & np.int32(tn > t_min)
                    w = alpha * Tq if comp != 0 else ZERO
                    wrow[np.uint64(j)] = w
                    Wb[q] += w
                    Tb[q] = tn if comp != 0 else Tq
                    lastk[q] = kk if comp != 0 else lk
                    Lb[q] = ZERO if stop != 0 else lv
                    n_stop += stop
                    n_comp += comp
                if n_comp > 0:
                    for f in range(F):
                        fv = feats[g, f]
                        for j in range(nc):
                            q = np.uint64(base + j)
                            accf[f, q] += wrow[np.uint64(j)] * fv
                n_done += n_stop
                count += n_comp
        for row in range(r_lo, r_hi):
            for col in range(c_lo, c_hi):
                q = (row - r_lo) * TILE + col - c_lo
                pix = cam * hw + row * width + col
                for f in range(F):
                    out[pix, f] = accf[f, q]
                acc[pix] = Wb[q]
                t_final[pix] = Tb[q]
                last[pix] = s + lastk[q] if lastk[q] >= 0 else -1
        n_pairs[t] = count


@njit(parallel=True, cache=True, fastmath=False)
def backward(offsets, ids, mx, my, ca, cb, cc, opac, feats, width, height, n_tiles_x, n_tiles_per_cam,
             t_final, last, g_out, g_acc, slots):
    """Back-to-front gradients, one tile per task. ``slots`` [len(ids), 6 + F]: per
    intersection dL/d(mx, my, a, b, c, o, f...). The tile's Gaussians are taken back
    to front from the last one any pixel composited; each pixel only takes those at or
    before its own last one, recovering ``T`` by division and keeping the suffix sum.
    As in the forward, rows are walked as whole masked 16-pixel tile rows; the
    per-Gaussian sums are kept per column (no reduction inside the vectorised loop) and
    summed over the columns in a fixed order at the end."""
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
        nc = c_hi - c_lo
        T = np.ones(TILE * TILE, dtype=np.float32)
        S = np.zeros(TILE * TILE, dtype=np.float32)
        lastk = np.full(TILE * TILE, -1, dtype=np.int32)
        ga = np.zeros(TILE * TILE, dtype=np.float32)
        gf = np.zeros((F, TILE * TILE), dtype=np.float32)
        k_max = -1
        for row in range(r_lo, r_hi):
            for col in range(c_lo, c_hi):
                q = (row - r_lo) * TILE + col - c_lo
                pix = cam * hw + row * width + col
                T[q] = t_final[pix]
                lk = last[pix]
                lastk[q] = np.int32(lk - s) if lk >= 0 else np.int32(-1)
                k_max = max(k_max, lk)
                ga[q] = g_acc[pix]
                for f in range(F):
                    gf[f, q] = g_out[pix, f]
        l_mx = np.empty(TILE, dtype=np.float32)
        l_my = np.empty(TILE, dtype=np.float32)
        l_a = np.empty(TILE, dtype=np.float32)
        l_b = np.empty(TILE, dtype=np.float32)
        l_c = np.empty(TILE, dtype=np.float32)
        l_o = np.empty(TILE, dtype=np.float32)
        l_f = np.empty((F, TILE), dtype=np.float32)
        gd = np.empty(TILE, dtype=np.float32)
        wrow = np.empty(TILE, dtype=np.float32)
        for k in range(k_max, s - 1, -1):
            g = ids[k]
            o = opac[g]
            if not (o * np.float32(255.0) > np.float32(1.0)):
                continue
            lim = np.float32(math.log(o * np.float32(255.0))) + lim_slack
            gx, gy, a, b, c = mx[g], my[g], ca[g], cb[g], cc[g]
            r0, r1 = row_range(gy, a, b, c, lim, r_lo, r_hi)
            c0, c1 = col_box(gx, a, b, c, lim, c_lo, c_hi)
            if c1 <= c0 or r1 <= r0:
                continue
            kk = np.int32(k - s)
            x0 = np.float32(c_lo) + HALF - gx
            for j in range(TILE):
                l_mx[j] = ZERO
                l_my[j] = ZERO
                l_a[j] = ZERO
                l_b[j] = ZERO
                l_c[j] = ZERO
                l_o[j] = ZERO
            for f in range(F):
                for j in range(TILE):
                    l_f[f, j] = ZERO
            n_hit = 0
            for row in range(r0, r1):
                dy = np.float32(row) + HALF - gy
                base = (row - r_lo) * TILE
                cdy = HALF * c * dy * dy
                bdy = b * dy
                for j in range(nc):
                    gd[j] = ga[np.uint64(base + j)]
                for f in range(F):
                    fv = feats[g, f]
                    for j in range(nc):
                        gd[j] += gf[f, np.uint64(base + j)] * fv
                n_row = np.int32(0)
                for j in range(nc):
                    q = np.uint64(base + j)
                    dx = x0 + np.float32(j)
                    sigma = (HALF * a * dx * dx + cdy) + bdy * dx
                    sc = min(max(sigma, ZERO), SIGMA_CLAMP)
                    G = exp_neg(sc)
                    raw = o * G
                    alpha = min(alpha_max, raw)
                    hit = (np.int32(kk <= lastk[q]) & np.int32(sigma >= ZERO) & np.int32(sigma <= lim)
                           & np.int32(alpha >= alpha_min))
                    one_m = ONE - alpha
                    Tn = T[q]
                    Tp = Tn / one_m  # transmittance before this Gaussian
                    T[q] = Tp if hit != 0 else Tn
                    w = alpha * Tp if hit != 0 else ZERO
                    wrow[j] = w
                    gdot = gd[j]
                    Sq = S[q]
                    g_alpha = Tp * gdot - Sq / one_m
                    S[q] = Sq + w * gdot
                    gae = g_alpha if (hit & np.int32(raw < alpha_max)) != 0 else ZERO
                    l_o[j] += gae * G
                    g_sigma = -gae * alpha
                    l_mx[j] -= g_sigma * (a * dx + bdy)
                    l_my[j] -= g_sigma * (c * dy + b * dx)
                    l_a[j] += HALF * g_sigma * dx * dx
                    l_b[j] += g_sigma * dx * dy
                    l_c[j] += HALF * g_sigma * dy * dy
                    n_row += hit
                if n_row > 0:
                    for f in range(F):
                        for j in range(nc):
                            l_f[f, j] += wrow[j] * gf[f, np.uint64(base + j)]
                n_hit += n_row
            if n_hit > 0:
                s_mx, s_my, s_a, s_b, s_c, s_o = ZERO, ZERO, ZERO, ZERO, ZERO, ZERO
                for j in range(TILE):
                    s_mx += l_mx[j]
                    s_my += l_my[j]
                    s_a += l_a[j]
                    s_b += l_b[j]
                    s_c += l_c[j]
                    s_o += l_o[j]
                sk = k
                slots[sk, 0] = s_mx
                slots[sk, 1] = s_my
                slots[sk, 2] = s_a
                slots[sk, 3] = s_b
                slots[sk, 4] = s_c
                slots[sk, 5] = s_o
                for f in range(F):
                    sf = ZERO
                    for j in range(TILE):
                        sf += l_f[f, j]
                    slots[sk, 6 + f] = sf

#: the per-Gaussian sums are split into this many fixed ranges of intersections, summed in
#: parallel into separate buffers that are then added in a fixed order: the result does not
#: depend on the number of threads
REDUCE_PARTS = 2


@njit(parallel=True, cache=True)
def reduce_slots(ids, slots, n_gauss):
    """Sum the per-intersection gradients per Gaussian (deterministic: fixed ranges, fixed order)."""
    n, m = ids.shape[0], slots.shape[1]
    part = np.zeros((REDUCE_PARTS, n_gauss, m), dtype=np.float32)
    step = (n + REDUCE_PARTS - 1) // REDUCE_PARTS
    for q in prange(REDUCE_PARTS):
        acc = part[q]
        for p in range(q * step, min(n, (q + 1) * step)):
            g = ids[p]
            for j in range(m):
                acc[g, j] += slots[p, j]
    out = part[0].copy()
    for g in prange(n_gauss):
        for q in range(1, REDUCE_PARTS):
            for j in range(m):
                out[g, j] += part[q, g, j]
    return out
