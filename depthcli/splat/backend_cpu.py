"""Compiled multi-threaded CPU backend of :func:`depthcli.splat.render.render` (numba).

Same rules as the torch backend (see :mod:`depthcli.splat.render`); organised like
gsplat's CUDA rasteriser:

1. **Project** every Gaussian in torch (differentiable by autograd, O(C N); shared
   with the torch backend: :func:`depthcli.splat.backend_torch.project_gaussians`).
2. **Bin** (no grad, compiled): each visible Gaussian goes into the list of every
   16x16 tile its opacity-aware bounding box touches. The box is that of the ellipse
   ``sigma <= log(255 o)`` (where ``alpha >= 1/255`` can hold), slightly enlarged, so
   every pixel the exact per-pixel test accepts is visited. Gaussians are inserted in
   front-to-back depth order (stable), so each tile's list is depth sorted.
3. **Forward** (compiled, parallel over tiles): every pixel walks its tile's list front
   to back with the exact per-pixel rules (``sigma >= 0``, ``alpha >= 1/255``, stop
   before ``T (1 - alpha) <= 1e-4``), and keeps its final ``T`` and the position of its
   last composited Gaussian.
4. **Backward** (compiled, parallel over tiles): each pixel walks back from its last
   composited Gaussian, recovering ``T_k = T_{k+1} / (1 - alpha_k)`` and the suffix sum
   ``S_k = sum_{i>k} w_i (g . f_i)``, as gsplat's backward does. Per-Gaussian gradients
   are written to one slot per (tile, Gaussian) intersection (a tile belongs to one
   thread, so no races) and summed per Gaussian in a fixed order: the result does not
   depend on the number of threads.

Arithmetic is float32 (as gsplat's kernels); float64 inputs are rounded to float32 for
the rasteriser and the outputs and gradients are returned in the input dtype. Memory is
O(tile intersections + pixels); no per-(Gaussian, pixel) array is ever built.

numba is imported only when this backend runs; kernels are compiled on first use and
cached on disk (``cache=True``), with one specialisation each (float32 arrays, int64
scalars, mode-independent: the feature count is a runtime size).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager

import numpy as np
import torch

from depthcli.splat.backend_torch import project_gaussians

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

_KERNELS = None


def _kernels():
    """Compile (or load from the cache) the numba kernels, once per process."""
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _build_kernels()
    return _KERNELS


def _build_kernels():
    import numba
    from numba import njit, prange

    f32 = np.float32
    alpha_min = f32(ALPHA_MIN)
    alpha_max = f32(ALPHA_MAX)
    t_min = f32(T_MIN)
    # pairs with sigma above log(255 o) + this are skipped before the (exact) alpha test
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
                for row in range(r0, r1):
                    c0, c1 = col_range(row, gx, gy, a, b, c, lim, c_lo, c_hi)
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
                for row in range(r0, r1):
                    c0, c1 = col_range(row, gx, gy, a, b, c, lim, c_lo, c_hi)
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

    return dict(tile_boxes=tile_boxes, bin_tiles=bin_tiles, forward=forward, backward=backward,
                reduce_slots=reduce_slots, numba=numba)


def _np32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).numpy())


def _i64(x) -> np.int64:
    return np.int64(int(x))


def bin_gaussians(means2d, cov2d, opac, depths, visible, width, height):
    """Tile lists of the visible Gaussians of every camera (flat ids ``c * N + n``).

    Returns ``(offsets [C * tiles + 1], ids [P])`` (int64 numpy) and the tile grid size."""
    k = _kernels()
    C, N = visible.shape
    order_parts, cam_parts = [], []
    with torch.no_grad():
        for c in range(C):
            vis = torch.nonzero(visible[c]).squeeze(1)
            order = vis.index_select(0, torch.sort(depths[c].detach().index_select(0, vis), stable=True).indices)
            order_parts.append(order + c * N)
            cam_parts.append(torch.full_like(order, c))
        order = torch.cat(order_parts).numpy().astype(np.int64)
        cams = torch.cat(cam_parts).numpy().astype(np.int64)
    m2 = means2d.detach().reshape(-1, 2)
    cv = cov2d.detach().reshape(-1, 3)
    mx, my = _np32(m2[:, 0]), _np32(m2[:, 1])
    sxx, syy = _np32(cv[:, 0]), _np32(cv[:, 2])
    n_tx, n_ty = (width + TILE - 1) // TILE, (height + TILE - 1) // TILE
    box = k["tile_boxes"](order, mx, my, sxx, syy, opac, _i64(width), _i64(height), _i64(n_tx), _i64(n_ty))
    offsets, ids = k["bin_tiles"](order, cams, box, _i64(n_tx), _i64(n_tx * n_ty), _i64(C))
    return offsets, ids, n_tx, n_tx * n_ty


class _Rasterize(torch.autograd.Function):
    """Compiled compositing of binned Gaussians; inputs flat over cameras: ``means2d``
    [G, 2], ``conics`` [G, 3], ``opac`` [G], ``feats`` [G, F]. Outputs ``sum w_i f_i``
    [C*H*W, F] and ``sum w_i`` [C*H*W]."""

    @staticmethod
    def forward(ctx, means2d, conics, opac, feats, binning, width, height, info):
        k = _kernels()
        offsets, ids, n_tx, n_tpc = binning
        G, F = feats.shape
        n_pix = (offsets.shape[0] - 1) // n_tpc * width * height
        arrays = (_np32(means2d[:, 0]), _np32(means2d[:, 1]), _np32(conics[:, 0]), _np32(conics[:, 1]),
                  _np32(conics[:, 2]), _np32(opac), _np32(feats.reshape(G, F)))
        out = np.empty((n_pix, F), dtype=np.float32)
        acc = np.empty(n_pix, dtype=np.float32)
        t_final = np.empty(n_pix, dtype=np.float32)
        last = np.empty(n_pix, dtype=np.int64)
        n_pairs = np.zeros(offsets.shape[0] - 1, dtype=np.int64)
        k["forward"](offsets, ids, *arrays, _i64(width), _i64(height), _i64(n_tx), _i64(n_tpc),
                     out, acc, t_final, last, n_pairs)
        ctx.state = (binning, arrays, t_final, last, width, height, G, means2d.dtype)
        info["n_pairs"] = int(n_pairs.sum())
        dtype = feats.dtype
        return torch.from_numpy(out).to(dtype), torch.from_numpy(acc).to(dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out, g_acc):
        k = _kernels()
        (offsets, ids, n_tx, n_tpc), arrays, t_final, last, width, height, G, dtype = ctx.state
        F = arrays[-1].shape[1]
        n_pix = t_final.shape[0]
        go = _np32(g_out) if g_out is not None else np.zeros((n_pix, F), dtype=np.float32)
        ga = _np32(g_acc) if g_acc is not None else np.zeros(n_pix, dtype=np.float32)
        slots = np.zeros((ids.shape[0], 6 + F), dtype=np.float32)
        k["backward"](offsets, ids, *arrays, _i64(width), _i64(height), _i64(n_tx), _i64(n_tpc),
                      t_final, last, go.reshape(n_pix, F), ga, slots)
        grads = torch.from_numpy(k["reduce_slots"](ids, slots, _i64(G)))
        del slots
        fd = ctx.needs_input_grad
        g_means2d = grads[:, 0:2].to(dtype) if fd[0] else None
        g_conics = grads[:, 2:5].to(dtype) if fd[1] else None
        g_opac = grads[:, 5].to(dtype) if fd[2] else None
        g_feats = grads[:, 6:].to(dtype) if fd[3] else None
        return g_means2d, g_conics, g_opac, g_feats, None, None, None, None


def render_cpu(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, mode, near_plane,
               far_plane, eps2d, backgrounds, radius_clip):
    """Same contract as :func:`depthcli.splat.render.render` (inputs already validated)."""
    from depthcli.splat.render import mode_depth_kind, mode_has_rgb, mode_is_expected

    if means.device.type != "cpu":
        from depthcli.errors import DepthcliError

        raise DepthcliError(f"render backend 'cpu' needs CPU tensors, got tensors on {means.device}",
                            hint="move the tensors to the CPU (.cpu()) or use backend='auto'")
    C, N = viewmats.shape[0], means.shape[0]
    dtype = means.dtype
    viewmats = viewmats.to(dtype)
    Ks = Ks.to(dtype)
    proj = project_gaussians(means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, eps2d,
                             radius_clip)
    means2d, depths, conics = proj["means2d"], proj["depths"], proj["conics"]
    if means2d.requires_grad:
        means2d.retain_grad()
    opac_cn = opacities[None, :].expand(C, N).to(dtype)
    feats = []
    if mode_has_rgb(mode):
        feats.append(colors.to(dtype).expand(C, N, 3))
    kind = mode_depth_kind(mode)
    if kind == "z":
        feats.append(depths[..., None])
    elif kind == "dist":
        feats.append(proj["dists"][..., None])
    feats = torch.cat(feats, dim=-1)  # [C, N, X]
    X = feats.shape[-1]
    binning = bin_gaussians(means2d, proj["cov2d"], _np32(opac_cn.reshape(-1)), depths, proj["visible"],
                            width, height)
    info = {}  # the forward writes n_pairs here
    out, acc = _Rasterize.apply(means2d.reshape(-1, 2), conics.reshape(-1, 3), opac_cn.reshape(-1),
                                feats.reshape(-1, X), binning, int(width), int(height), info)
    out = out.reshape(C, height, width, X)
    alphas = acc.reshape(C, height, width, 1)
    if backgrounds is not None and mode_has_rgb(mode):
        bg = backgrounds.to(dtype).expand(C, 3)
        rgb = out[..., :3] + (1.0 - alphas) * bg[:, None, None, :]
        out = torch.cat([rgb, out[..., 3:]], dim=-1) if X > 3 else rgb
    if mode_is_expected(mode):
        out = torch.cat([out[..., :-1], out[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)
    meta = {
        "means2d": means2d,
        "radii": proj["radii"],
        "depths": depths,
        "conics": conics,
        "n_pairs": info["n_pairs"],
        "n_intersections": int(binning[1].shape[0]),
        "backend": "cpu",
        "width": width,
        "height": height,
        "n_cameras": C,
    }
    return out, alphas, meta


def num_threads() -> int:
    """Threads the compiled kernels run on (numba's setting)."""
    return int(_kernels()["numba"].get_num_threads())


@contextmanager
def raster_threads(n: int | None):
    """Run the compiled rasteriser on ``n`` threads (None: all cores), restored afterwards."""
    import numba

    before = numba.get_num_threads()
    want = numba.config.NUMBA_NUM_THREADS if not n else max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(want)
    try:
        yield want
    finally:
        numba.set_num_threads(before)


def cpu_count() -> int:
    return os.cpu_count() or 1
