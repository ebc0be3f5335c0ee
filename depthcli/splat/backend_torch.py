"""Pure-torch backend of :func:`depthcli.splat.render.render` (CPU, CUDA, MPS).

Rules are those of gsplat's classic rasteriser (see :mod:`depthcli.splat.render`). The
work is organised around (Gaussian, pixel) *pairs* instead of a dense image x Gaussian
product:

1. **Project** every Gaussian (differentiable, O(C N), plain autograd).
2. **List pairs** (no grad): for each visible Gaussian, the exact set of pixels where
   ``o exp(-sigma) >= 1/255`` is an ellipse; it is enumerated row by row (one span of
   columns per row), in front-to-back depth order.
3. **Front-to-back pass** (no grad), in depth chunks of about a million candidate pairs
   (later chunks skip pixels that already terminated): stable-sort the pairs by pixel
   (NumPy radix sort on CPU; each pixel's pairs stay in depth order), evaluate alpha
   (pairs with ``alpha < 1/255`` or ``sigma < 0`` count as alpha 0), take segmented
   cumulative sums of ``log(1 - alpha)`` in float64 for every pair's transmittance, and
   keep only valid pairs before each pixel's termination (``T (1 - alpha) <= 1e-4``).
4. **Composite** the surviving pairs with a custom ``autograd.Function`` whose backward
   is written out (segmented suffix sums), much faster than recording a per-pair graph.

Performance notes (CPU): cost is about 80-100 ns of CPU per candidate pair for forward +
backward (20k Gaussians at 128x96: ~0.9M pairs, ~75-85 ms). On a machine whose cores are
shared with other busy processes, OpenMP threads that spin while waiting make every op
stall (5-10x slower); run such processes with ``OMP_WAIT_POLICY=PASSIVE`` in the
environment or ``torch.set_num_threads(1)``. See also :func:`tune_cpu_allocator`.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys

import torch
from torch import Tensor

#: gsplat's constants.
ALPHA_MIN = 1.0 / 255.0  # pairs with a smaller alpha are skipped
ALPHA_MAX = 0.999  # alpha is clamped to this
T_MIN = 1e-4  # a pixel stops before the Gaussian that brings T to <= T_MIN
LOG_T_MIN = math.log(T_MIN)
#: Upper bound on candidate pairs handled at once in the front-to-back pass (memory bound).
MAX_PAIRS_PER_CHUNK = 1_500_000


_MALLOC_TUNED = False


def tune_cpu_allocator() -> None:
    """Keep freed tensor memory in the process heap (glibc ``mallopt``), once per process.

    The CPU rasteriser allocates and frees many 1-30 MB temporaries per step. By default
    glibc serves those with fresh ``mmap``s, and the page faults of touching them cost
    about as much time as the arithmetic (measured: 33 ms of system time per 20k-Gaussian
    step). Raising the mmap threshold to 64 MiB and the trim threshold to 256 MiB keeps the
    memory for reuse instead. Process-wide and harmless elsewhere (RSS stays at its peak);
    called by the torch backend on the first CPU render; set ``DEPTHCLI_MALLOC_TUNE=0`` to
    opt out. A no-op on non-glibc systems.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    if os.environ.get("DEPTHCLI_MALLOC_TUNE", "1") == "0" or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
        libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):  # not glibc
        pass


def _acc_dtype(device: torch.device) -> torch.dtype:
    """Dtype for transmittance sums: float64, except on MPS which has none."""
    return torch.float32 if device.type == "mps" else torch.float64


def mode_features(mode: str, colors, proj: dict, C: int, N: int, dtype) -> "torch.Tensor":
    """The per-Gaussian features a mode composites, [C, N, X] (shared by the torch and cpu
    backends): RGB (3) if the mode has colour, then z-depth or hit distance (1) if it has depth."""
    import torch

    from depthcli.splat.modes import mode_depth_kind, mode_has_rgb

    feats = []
    if mode_has_rgb(mode):
        feats.append(colors.to(dtype).expand(C, N, 3))
    kind = mode_depth_kind(mode)
    if kind == "z":
        feats.append(proj["depths"][..., None])
    elif kind == "dist":
        feats.append(proj["dists"][..., None])
    return torch.cat(feats, dim=-1)


def finish_outputs(out: "torch.Tensor", acc: "torch.Tensor", C: int, height: int, width: int, backgrounds, mode: str):
    """Composited sums -> render outputs (shared by the torch and cpu backends).

    ``out`` [C*H*W, X] holds sum w_i f_i, ``acc`` [C*H*W] sum w_i. Adds ``T_final * background``
    to the RGB channels and divides the depth channel by max(sum w_i, 1e-10) for expected-depth
    modes. Returns ``(out [C, H, W, X], alphas [C, H, W, 1])``.
    """
    import torch

    from depthcli.splat.modes import mode_has_rgb, mode_is_expected

    X = out.shape[-1]
    out = out.reshape(C, height, width, X)
    alphas = acc.reshape(C, height, width, 1)
    if backgrounds is not None and mode_has_rgb(mode):
        bg = backgrounds.to(out.dtype).expand(C, 3)
        rgb = out[..., :3] + (1.0 - alphas) * bg[:, None, None, :]
        out = torch.cat([rgb, out[..., 3:]], dim=-1) if X > 3 else rgb
    if mode_is_expected(mode):
        out = torch.cat([out[..., :-1], out[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)
    return out, alphas


def project_gaussians(means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, eps2d,
                      radius_clip):
    """EWA projection of 3D Gaussians into C pinhole cameras (gsplat's classic rules).

    Returns a dict of ``[C, N, ...]`` tensors: ``means2d`` [C, N, 2] (pixels),
    ``depths`` [C, N] (camera z), ``cov2d`` [C, N, 3] (xx, xy, yy incl. eps2d),
    ``conics`` [C, N, 3] (a, b, c of the inverse 2D covariance), ``radii`` [C, N] int32
    (3-sigma radius, 0 = culled), ``visible`` [C, N] bool and ``dists`` [C, N] (distance
    from the camera centre to each centre, ``||cam_from_world(mean)||``).
    """
    # Written out per matrix entry on [N] / [C, N] tensors (no batched 3x3 matmuls): fewer
    # flops, and small ops that never hit multi-threaded BLAS paths.
    q = quats / quats.norm(dim=-1, keepdim=True)
    qw, qx, qy, qz = q.unbind(-1)
    R = [[1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy)],
         [2 * (qx * qy + qw * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qw * qx)],
         [2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx * qx + qy * qy)]]
    sx, sy, sz = scales.unbind(-1)
    M = [[R[i][0] * sx, R[i][1] * sy, R[i][2] * sz] for i in range(3)]  # R diag(s)
    S = [[None] * 3 for _ in range(3)]  # world covariance M M^T, [N] entries
    for i in range(3):
        for j in range(i, 3):
            S[i][j] = S[j][i] = M[i][0] * M[j][0] + M[i][1] * M[j][1] + M[i][2] * M[j][2]
    V = viewmats[:, :3, :3]  # [C, 3, 3] rotation of cam_from_world
    Vc = [[V[:, i, j, None] for j in range(3)] for i in range(3)]  # [C, 1] entries
    mx, my, mz = means.unbind(-1)
    pcs = [Vc[i][0] * mx + Vc[i][1] * my + Vc[i][2] * mz + viewmats[:, i, 3, None] for i in range(3)]
    A = [[Vc[i][0] * S[0][j] + Vc[i][1] * S[1][j] + Vc[i][2] * S[2][j] for j in range(3)] for i in range(3)]
    cc = {}  # camera covariance V S V^T, [C, N] entries
    for i in range(3):
        for j in range(i, 3):
            cc[i, j] = cc[j, i] = A[i][0] * Vc[j][0] + A[i][1] * Vc[j][1] + A[i][2] * Vc[j][2]
    x, y, z = pcs
    valid = (z >= near_plane) & (z <= far_plane)
    zs = torch.where(valid, z, torch.ones_like(z))  # keeps NaN/inf out of culled entries' grads
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    txz = torch.minimum(torch.maximum(x / zs, -lim_x_neg), lim_x_pos)  # clamped x/z
    tyz = torch.minimum(torch.maximum(y / zs, -lim_y_neg), lim_y_pos)
    # J = [[fx/z, 0, -fx x'/z^2], [0, fy/z, -fy y'/z^2]] with x' = z * clamped(x/z)
    j00, j02 = fx / zs, -fx * txz / zs
    j11, j12 = fy / zs, -fy * tyz / zs
    # cov2d = J cov_cam J^T written out (J has two zeros)
    sxx = j00 * j00 * cc[0, 0] + 2 * j00 * j02 * cc[0, 2] + j02 * j02 * cc[2, 2]
    syy = j11 * j11 * cc[1, 1] + 2 * j11 * j12 * cc[1, 2] + j12 * j12 * cc[2, 2]
    sxy = j00 * j11 * cc[0, 1] + j00 * j12 * cc[0, 2] + j02 * j11 * cc[2, 1] + j02 * j12 * cc[2, 2]
    sxx = sxx + eps2d
    syy = syy + eps2d
    det = sxx * syy - sxy * sxy
    ok = valid & (det > 0)
    dets = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([syy / dets, -sxy / dets, sxx / dets], dim=-1)
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)
    with torch.no_grad():
        b = 0.5 * (sxx + syy)
        v1 = b + torch.sqrt(torch.clamp(b * b - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(torch.clamp(v1, min=0.0)))
        ok = ok & (radius > radius_clip)
        mx, my = means2d[..., 0], means2d[..., 1]
        ok = ok & (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        ok = ok & torch.isfinite(mx) & torch.isfinite(my)
        radii = torch.where(ok, radius, torch.zeros_like(radius)).to(torch.int32)
    return {
        "means2d": means2d,
        "depths": z,
        "dists": torch.sqrt((x * x + y * y + z * z).clamp(min=1e-20)),
        "cov2d": torch.stack([sxx, sxy, syy], dim=-1),
        "conics": conics,
        "radii": radii,
        "visible": ok,
    }


def _expand(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Sub-items of items with ``counts[i]`` sub-items each: (item id, k) per sub-item,
    item-major, ``k = 0 .. counts[item] - 1``."""
    total = int(counts.sum())
    item = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts,
                                   output_size=total)
    first = torch.cumsum(counts, 0) - counts  # index of each item's first sub-item
    k = torch.arange(total, device=counts.device) - first.index_select(0, item)
    return item, k


@torch.no_grad()
def _list_pairs(mx, my, ca, cb, cc, syy, opac, width, height):
    """Candidate (Gaussian, pixel) pairs of the given Gaussians (all [M], in the order to list).

    Enumerates the pixel centres inside each Gaussian's ellipse ``sigma <= log(255 o)``
    (slightly enlarged so rounding never loses a pair; the exact alpha test comes later),
    one span of columns per image row. Returns ``(key, pix)``, both [P] int64,
    Gaussian-major: ``key = (gauss << 32) | (row << 16) | col`` (gauss = index into the
    inputs) and ``pix = row * width + col``.
    """
    two_l = 2.0 * torch.log(torch.clamp(opac * 255.0, min=1.0))  # 2 * max sigma, 0 when o <= 1/255
    two_l = two_l * (1.0 + 1e-4) + 1e-6
    ey = torch.sqrt(two_l * syy)  # half-height of the ellipse
    r0 = torch.ceil(my - ey - 0.5).clamp(min=0)
    r1 = torch.floor(my + ey - 0.5).clamp(max=height - 1)
    nrow = (r1 - r0 + 1).clamp(min=0).to(torch.int64)
    nrow = torch.where(opac * 255.0 > 1.0, nrow, torch.zeros_like(nrow))
    g, k = _expand(nrow)
    if g.numel() == 0:
        return g, g
    row = r0.to(torch.int64).index_select(0, g) + k
    dy = row.to(mx.dtype) + 0.5 - my.index_select(0, g)
    a, b = ca.index_select(0, g), cb.index_select(0, g)
    # columns where a dx^2 + 2 b dy dx + c dy^2 <= 2L  (dx = px - mx)
    disc = (b * b - a * cc.index_select(0, g)) * dy * dy + a * two_l.index_select(0, g)
    half = torch.sqrt(torch.clamp(disc, min=0.0)) / a
    centre = mx.index_select(0, g) - b * dy / a
    c0 = torch.ceil(centre - half - 0.5).clamp(min=0)
    c1 = torch.floor(centre + half - 0.5).clamp(max=width - 1)
    ncol = torch.where(disc >= 0, (c1 - c0 + 1).clamp(min=0), torch.zeros_like(c1)).to(torch.int64)
    c0 = c0.to(torch.int64)
    base_key = (g << 32) | (row << 16) | c0  # per (Gaussian, row) span
    base_pix = row * width + c0
    item, k = _expand(ncol)
    return base_key.index_select(0, item) + k, base_pix.index_select(0, item) + k


def _run_offsets(values: Tensor, pix: Tensor, n_pix: int) -> tuple[Tensor, Tensor]:
    """Segmented sums over runs of equal ``pix`` (``pix`` sorted, < n_pix).

    Returns ``(prefix [P], totals [n_pix])``: ``prefix`` is the inclusive cumulative sum of
    ``values`` within each element's run, ``totals`` the sum of each pixel's run. Uses one
    global cumulative sum minus, per run, the sum of all earlier runs (keep ``values``
    in float64 for long arrays).
    """
    totals = torch.zeros(n_pix, dtype=values.dtype, device=values.device).index_add_(0, pix, values)
    before = torch.cumsum(totals, 0) - totals  # sum of the runs of smaller pixel ids
    return torch.cumsum(values, 0) - before.index_select(0, pix), totals


def _stable_argsort(keys: Tensor, n_keys: int) -> Tensor:
    """Stable argsort of non-negative integer ``keys`` < ``n_keys``.

    On CPU, NumPy's stable sort of uint16 is a radix sort (several times faster than
    ``torch.sort`` on 2 cores); wider keys take two uint16 passes (LSD radix).
    """
    if keys.device.type != "cpu":
        return torch.sort(keys, stable=True).indices
    import numpy as np

    k = keys.numpy()
    if n_keys <= 1 << 16:
        return torch.from_numpy(np.argsort(k.astype(np.uint16), kind="stable"))
    if n_keys <= 1 << 32:
        perm = np.argsort((k & 0xFFFF).astype(np.uint16), kind="stable")
        perm = perm[np.argsort((k[perm] >> 16).astype(np.uint16), kind="stable")]
        return torch.from_numpy(perm)
    return torch.sort(keys, stable=True).indices


def _pair_alpha(dx, dy, a, b, c, o):
    """sigma, exp(-sigma), unclamped and clamped alpha of pairs (dx, dy = pixel - mean2d)."""
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    G = torch.exp(-sigma)
    raw = o * G
    return sigma, G, raw, torch.clamp(raw, max=ALPHA_MAX)


def _take(idx: Tensor, *tensors: Tensor) -> list[Tensor]:
    return [t.index_select(0, idx) for t in tensors]


def _eval_sorted_pairs(key: Tensor, ids: Tensor, mx, my, ca, cb, cc, opac, width: int):
    """Per-pair quantities of pairs given as packed keys (see :func:`_list_pairs`), in
    key order: ``g`` (flat Gaussian id), ``pix`` (row * width + col), ``dx``/``dy`` (pixel
    centre - mean2d), ``G = exp(-sigma)``, clamped ``alpha``, ``valid`` (sigma >= 0 and
    alpha >= 1/255) and ``log1m = log(1 - alpha)`` in float64 (0 for invalid pairs).
    (``torch.compile`` of this chain was tried: no measurable gain per step, ~30 s compile.)"""
    g = ids.index_select(0, key >> 32)
    row, col = (key >> 16) & 0xFFFF, key & 0xFFFF
    pix = row * width + col
    dx = col.to(mx.dtype) + 0.5 - mx.index_select(0, g)
    dy = row.to(mx.dtype) + 0.5 - my.index_select(0, g)
    sigma, G, _, alpha = _pair_alpha(dx, dy, *_take(g, ca, cb, cc, opac))
    valid = (sigma >= 0) & (alpha >= ALPHA_MIN)
    log1m = torch.log1p(-torch.where(valid, alpha, torch.zeros_like(alpha)))
    return g, pix, dx, dy, G, alpha, valid, log1m


def _depth_chunks(order: Tensor, sxx: Tensor, sxy: Tensor, syy: Tensor, opac: Tensor, n_pix: int,
                  max_pairs: int) -> list[Tensor]:
    """Split ``order`` (front to back) into consecutive chunks of about ``max_pairs``
    candidate pairs each, from each Gaussian's footprint (ellipse area plus a rim)."""
    if order.numel() == 0:
        return []
    two_l = 2.0 * torch.log(torch.clamp(opac.index_select(0, order) * 255.0, min=1.0))
    a, b, c = (t.index_select(0, order) for t in (sxx, sxy, syy))
    area = math.pi * two_l * torch.sqrt(torch.clamp(a * c - b * b, min=0.0))
    rim = 2.0 * (torch.sqrt(two_l * a) + torch.sqrt(two_l * c)) + 1.0
    est = (area + rim).clamp(max=float(n_pix))
    cum = torch.cumsum(est.to(torch.float64), 0)
    total = float(cum[-1])
    n_chunks = max(1, math.ceil(total / max_pairs))
    if n_chunks == 1:
        return [order]
    targets = torch.arange(1, n_chunks, dtype=torch.float64, device=order.device) * (total / n_chunks)
    cuts = sorted(set(torch.searchsorted(cum, targets).tolist()) - {0, order.numel()})
    edges = [0] + cuts + [order.numel()]
    return [order[lo:hi] for lo, hi in zip(edges[:-1], edges[1:])]


@torch.no_grad()
def _front_to_back(orders, mx, my, ca, cb, cc, sxx, sxy, syy, opac, width, height, acc_dtype, max_pairs):
    """Front-to-back pass: which (Gaussian, pixel) pairs get composited, and their alpha and T.

    ``orders[c]`` lists camera c's visible Gaussians (flat ``c*N + n`` ids into the
    per-Gaussian tables) front to back. Returns a dict of [P] tensors: ``g`` (flat
    Gaussian id), ``pix`` (global pixel id ``c*H*W + row*W + col``), ``dx``/``dy`` (pixel
    centre - mean2d), ``G`` (exp(-sigma)), ``alpha`` (clamped), ``T`` (transmittance
    before the pair); ``bounds`` (offsets of the depth chunks: inside each chunk the pairs
    are sorted by pixel, then front to back; a later chunk lies behind an earlier one) and
    ``n_candidates`` (pairs evaluated).
    """
    device, dtype = mx.device, mx.dtype
    HW = width * height
    parts = []
    n_cand = 0
    for cam, order in enumerate(orders):
        chunks = _depth_chunks(order, sxx, sxy, syy, opac, HW, max_pairs)
        chunked = len(chunks) > 1
        if chunked:
            logT = torch.zeros(HW, dtype=acc_dtype, device=device)  # log T after the chunks so far
            done = torch.zeros(HW, dtype=torch.bool, device=device)  # pixel terminated
        for ids in chunks:
            key, pix = _list_pairs(*_take(ids, mx, my, ca, cb, cc, syy, opac), width, height)
            if chunked:  # earlier chunks may have finished some pixels
                live = torch.nonzero(~done.index_select(0, pix)).squeeze(1)
                key, pix = _take(live, key, pix)
            if key.numel() == 0:
                continue
            n_cand += key.numel()
            # pairs are listed front to back: a stable sort by pixel gives (pixel, depth) order
            key = key.index_select(0, _stable_argsort(pix, HW))
            g, pix, dx, dy, G, alpha, valid, log1m = _eval_sorted_pairs(key, ids, mx, my, ca, cb, cc, opac, width)
            log1m = log1m.to(acc_dtype)
            log_next, _ = _run_offsets(log1m, pix, HW)  # log T after the pair (this chunk)
            if chunked:
                log_next += logT.index_select(0, pix)
            alive = log_next > LOG_T_MIN
            if chunked:
                done[pix[~alive]] = True
            kidx = torch.nonzero(valid & alive).squeeze(1)
            g, pix, dx, dy, G, alpha, log1m, log_next = _take(kidx, g, pix, dx, dy, G, alpha, log1m, log_next)
            if chunked:
                logT.index_add_(0, pix, log1m)
            T = torch.exp(log_next - log1m).to(dtype)
            parts.append((g, pix + cam * HW if cam else pix, dx, dy, G, alpha, T))
    names = ("g", "pix", "dx", "dy", "G", "alpha", "T")
    if not parts:
        out = {k: torch.zeros(0, dtype=torch.int64 if k in ("g", "pix") else dtype, device=device) for k in names}
        out.update(bounds=[0, 0], n_candidates=n_cand)
        return out
    bounds = [0]
    for part in parts:
        bounds.append(bounds[-1] + part[0].numel())
    out = {k: torch.cat([p[i] for p in parts]) if len(parts) > 1 else parts[0][i] for i, k in enumerate(names)}
    out.update(bounds=bounds, n_candidates=n_cand)
    return out


class _Composite(torch.autograd.Function):
    """Alpha compositing of the surviving (Gaussian, pixel) pairs, backward written out.

    Differentiable inputs (flat over cameras): ``means2d`` [G, 2], ``conics`` [G, 3]
    (a, b, c), ``opac`` [G], ``feats`` [G, F]. ``pairs`` comes from
    :func:`_front_to_back` (alpha and transmittance already computed there, without
    grad). Outputs ``sum w_i f_i`` [n_pix, F] and ``sum w_i`` [n_pix] with
    ``w_i = alpha_i T_i``. Backward, per pixel with ``S_k = sum_{i>k} w_i (g . f_i)``:
    ``dL/dalpha_k = T_k (g . f_k) - S_k / (1 - alpha_k)``; then through
    ``alpha = min(0.999, o exp(-sigma))`` and sigma to the means, conics and opacities.
    """

    @staticmethod
    def forward(ctx, means2d, conics, opac, feats, pairs, n_pix, acc_dtype):
        g, pix, alpha, T = pairs["g"], pairs["pix"], pairs["alpha"], pairs["T"]
        w = alpha * T
        F = feats.shape[1]
        out = torch.zeros((n_pix, F), dtype=feats.dtype, device=feats.device)
        for f in range(F):
            out[:, f].index_add_(0, pix, w * feats[:, f].index_select(0, g))
        acc = torch.zeros(n_pix, dtype=w.dtype, device=w.device)
        acc.index_add_(0, pix, w)
        ctx.save_for_backward(means2d, conics, opac, feats, w)
        ctx.pairs = pairs
        ctx.acc_dtype = acc_dtype
        return out, acc

    @staticmethod
    def backward(ctx, g_out, g_acc):
        means2d, conics, opac, feats, w = ctx.saved_tensors
        pairs = ctx.pairs
        g, pix, dx, dy, G, alpha, T = (pairs[k] for k in ("g", "pix", "dx", "dy", "G", "alpha", "T"))
        n_pix = g_acc.numel()
        F = feats.shape[1]
        gcols = [g_out[:, f].index_select(0, pix) for f in range(F)]  # dL/dout at each pair's pixel
        gdot = g_acc.index_select(0, pix)  # dL/dw_i = g_acc + sum_f g_f f_i
        for f in range(F):
            gdot = gdot + gcols[f] * feats[:, f].index_select(0, g)
        # S_k = sum over later pairs of the same pixel of w_i gdot_i (later chunks first)
        v = (w * gdot).to(ctx.acc_dtype)
        suffix = torch.empty_like(v)
        later = torch.zeros(n_pix, dtype=ctx.acc_dtype, device=v.device)
        bounds = pairs["bounds"]
        for lo, hi in reversed(list(zip(bounds[:-1], bounds[1:]))):
            if hi <= lo:
                continue
            vc, pc = v[lo:hi], pix[lo:hi]
            prefix, tot = _run_offsets(vc, pc, n_pix)
            # total of the pixel's run - inclusive prefix, plus everything in later chunks
            s = (tot + later).index_select(0, pc) - prefix
            suffix[lo:hi] = s
            if lo > 0:
                later += tot
        g_alpha = T * gdot - suffix.to(T.dtype) / (1.0 - alpha)
        # alpha = min(0.999, o G): no gradient where clamped; elsewhere raw alpha == alpha
        g_raw = torch.where(alpha < ALPHA_MAX, g_alpha, torch.zeros_like(g_alpha))
        g_sigma = -g_raw * alpha  # d(o exp(-sigma))/dsigma = -alpha
        n = means2d.shape[0]

        def scatter(src):
            return torch.zeros(n, dtype=src.dtype, device=src.device).index_add_(0, g, src)

        g_means2d = g_conics = g_opac = g_feats = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # sigma = 0.5 (a dx^2 + c dy^2) + b dx dy with dx = px - mx, so per Gaussian
            # dL/dmx = -(a S_x + b S_y), dL/dmy = -(c S_y + b S_x) with S_x = sum g_sigma dx, ...
            gsx, gsy = g_sigma * dx, g_sigma * dy
            s_x, s_y = scatter(gsx), scatter(gsy)
            a, b, c = conics.unbind(1)
            g_means2d = torch.stack([-(a * s_x + b * s_y), -(c * s_y + b * s_x)], 1)
            g_conics = torch.stack([0.5 * scatter(gsx * dx), scatter(gsx * dy), 0.5 * scatter(gsy * dy)], 1)
        if ctx.needs_input_grad[2]:
            g_opac = scatter(g_raw * G)  # dalpha/do = exp(-sigma)
        if ctx.needs_input_grad[3]:
            g_feats = torch.stack([scatter(w * gcols[f]) for f in range(F)], 1)
        return g_means2d, g_conics, g_opac, g_feats, None, None, None


def render_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, mode, near_plane,
                 far_plane, eps2d, backgrounds, radius_clip, max_pairs_per_chunk=MAX_PAIRS_PER_CHUNK):
    """Same contract as :func:`depthcli.splat.render.render` (inputs already validated).

    ``max_pairs_per_chunk`` bounds the candidate pairs handled at once (memory).
    """
    C, N = viewmats.shape[0], means.shape[0]
    dtype, device = means.dtype, means.device
    if device.type == "cpu":
        tune_cpu_allocator()
    viewmats = viewmats.to(dtype)
    Ks = Ks.to(dtype)
    proj = project_gaussians(means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, eps2d,
                             radius_clip)
    means2d, depths, conics = proj["means2d"], proj["depths"], proj["conics"]
    if means2d.requires_grad:
        means2d.retain_grad()
    opac_cn = opacities[None, :].expand(C, N)
    feats = mode_features(mode, colors, proj, C, N, dtype)  # [C, N, X]
    X = feats.shape[-1]
    HW = width * height
    n_pix = C * HW

    with torch.no_grad():
        orders = []
        d_all = depths.detach()
        for c in range(C):
            vis = torch.nonzero(proj["visible"][c]).squeeze(1)
            # front to back; ties keep the lower index first
            orders.append(vis.index_select(0, torch.sort(d_all[c].index_select(0, vis), stable=True).indices) + c * N)
        m2 = means2d.detach().reshape(-1, 2)
        co = conics.detach().reshape(-1, 3)
        cv = proj["cov2d"].detach().reshape(-1, 3)
        pairs = _front_to_back(
            orders, m2[:, 0].contiguous(), m2[:, 1].contiguous(), co[:, 0].contiguous(), co[:, 1].contiguous(),
            co[:, 2].contiguous(), cv[:, 0].contiguous(), cv[:, 1].contiguous(), cv[:, 2].contiguous(),
            opac_cn.detach().reshape(-1).to(dtype), width, height, _acc_dtype(device), max_pairs_per_chunk,
        )
    out, acc = _Composite.apply(means2d.reshape(-1, 2), conics.reshape(-1, 3), opac_cn.reshape(-1).to(dtype),
                                feats.reshape(-1, X), pairs, n_pix, _acc_dtype(device))
    out, alphas = finish_outputs(out, acc, C, height, width, backgrounds, mode)
    meta = {
        "means2d": means2d,
        "radii": proj["radii"],
        "depths": depths,
        "conics": conics,
        "n_pairs": int(pairs["g"].numel()),
        "n_candidates": int(pairs["n_candidates"]),
        "backend": "torch",
        # the keys gsplat's densification strategies read
        "width": width,
        "height": height,
        "n_cameras": C,
    }
    return out, alphas, meta
