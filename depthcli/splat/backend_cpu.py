"""Compiled multi-threaded CPU backend of :func:`depthcli.splat.render.render` (numba).

Same rules as the torch backend (see :mod:`depthcli.splat.render`); organised like
gsplat's CUDA rasteriser:

1. **Project** every Gaussian (compiled, parallel over Gaussians, float64, with a
   hand-written backward: :mod:`depthcli.splat._cpu_project`; the same rules as the
   torch backend's :func:`depthcli.splat.backend_torch.project_gaussians`, which is
   used instead when camera matrices need gradients).
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

from contextlib import contextmanager

import numpy as np
import torch

from depthcli.splat.backend_torch import finish_outputs, mode_features, project_gaussians

TILE = 16  # must match depthcli.splat._cpu_kernels.TILE
TILES_PER_CHUNK = 2  # tiles handed to a thread at a time

_KERNELS = None


def _kernels():
    """Compile (or load from the cache) the numba kernels, once per process."""
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _build_kernels()
    return _KERNELS


def _build_kernels():
    import numba

    from depthcli.splat import _cpu_kernels as kc
    from depthcli.splat import _cpu_project as kp

    return dict(tile_boxes=kc.tile_boxes, bin_tiles=kc.bin_tiles, forward=kc.forward, backward=kc.backward,
                reduce_slots=kc.reduce_slots, project_forward=kp.project_forward,
                project_backward=kp.project_backward, numba=numba)


@contextmanager
def _dynamic_schedule(numba, chunk: int = TILES_PER_CHUNK):
    """Hand tiles out to threads in small chunks as they free up (numba's default splits
    the tile range into one static block per thread): tiles differ a lot in work, and on
    a shared machine a thread may be descheduled for a while."""
    before = numba.set_parallel_chunksize(chunk)
    try:
        yield
    finally:
        numba.set_parallel_chunksize(before)


def _np32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).numpy())


def _i64(x) -> np.int64:
    return np.int64(int(x))


def _np64(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float64).numpy())


class _Project(torch.autograd.Function):
    """Compiled EWA projection: ``(means [N, 3], quats [N, 4], scales [N, 3])`` and fixed
    cameras -> ``means2d, depths, dists, cov2d, conics, radii, visible`` ([C, N, ...], see
    :func:`depthcli.splat.backend_torch.project_gaussians`), in the input dtype."""

    @staticmethod
    def forward(ctx, means, quats, scales, viewmats, Ks, width, height, near, far, eps2d, radius_clip):
        k = _kernels()
        arrays = (_np64(means), _np64(quats), _np64(scales), _np64(viewmats), _np64(Ks))
        C, N = arrays[3].shape[0], arrays[0].shape[0]
        scalars = (float(width), float(height), float(near), float(far), float(eps2d))
        means2d, cov2d, conics = (np.empty((C, N, d)) for d in (2, 3, 3))
        depths, dists = np.empty((C, N)), np.empty((C, N))
        radii, visible = np.empty((C, N), np.int32), np.empty((C, N), np.bool_)
        k["project_forward"](*arrays, *scalars, float(radius_clip), means2d, depths, dists, cov2d, conics, radii, visible)
        ctx.state = (arrays, scalars, means.dtype)
        t = lambda a: torch.from_numpy(a).to(means.dtype)  # noqa: E731
        outs = (t(means2d), t(depths), t(dists), t(cov2d), t(conics), torch.from_numpy(radii), torch.from_numpy(visible))
        ctx.mark_non_differentiable(outs[3], outs[5], outs[6])
        return outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_means2d, g_depths, g_dists, g_cov2d, g_conics, g_radii, g_visible):
        k = _kernels()
        arrays, scalars, dtype = ctx.state
        C, N = arrays[3].shape[0], arrays[0].shape[0]
        g = lambda t, shape: np.zeros(shape) if t is None else _np64(t)  # noqa: E731
        g_means, g_quats, g_scales = np.empty((N, 3)), np.empty((N, 4)), np.empty((N, 3))
        k["project_backward"](*arrays, *scalars, g(g_means2d, (C, N, 2)), g(g_depths, (C, N)), g(g_dists, (C, N)),
                              g(g_conics, (C, N, 3)), g_means, g_quats, g_scales)
        t = lambda a: torch.from_numpy(a).to(dtype)  # noqa: E731
        return t(g_means), t(g_quats), t(g_scales), None, None, None, None, None, None, None, None


def project_cpu(means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, eps2d, radius_clip):
    """:func:`depthcli.splat.backend_torch.project_gaussians`, compiled (same dict)."""
    if viewmats.requires_grad or Ks.requires_grad:  # camera gradients: autograd through the torch version
        return project_gaussians(means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, eps2d,
                                 radius_clip)
    means2d, depths, dists, cov2d, conics, radii, visible = _Project.apply(
        means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, eps2d, radius_clip)
    return {"means2d": means2d, "depths": depths, "dists": dists, "cov2d": cov2d, "conics": conics, "radii": radii,
            "visible": visible}


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
        with _dynamic_schedule(k["numba"]):
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
        with _dynamic_schedule(k["numba"]):
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
    if means.device.type != "cpu":
        from depthcli.errors import DepthcliError

        raise DepthcliError(f"render backend 'cpu' needs CPU tensors, got tensors on {means.device}",
                            hint="move the tensors to the CPU (.cpu()) or use backend='auto'")
    C, N = viewmats.shape[0], means.shape[0]
    dtype = means.dtype
    viewmats = viewmats.to(dtype)
    Ks = Ks.to(dtype)
    proj = project_cpu(means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, eps2d, radius_clip)
    means2d, depths, conics = proj["means2d"], proj["depths"], proj["conics"]
    if means2d.requires_grad:
        means2d.retain_grad()
    opac_cn = opacities[None, :].expand(C, N).to(dtype)
    feats = mode_features(mode, colors, proj, C, N, dtype)  # [C, N, X]
    X = feats.shape[-1]
    binning = bin_gaussians(means2d, proj["cov2d"], _np32(opac_cn.reshape(-1)), depths, proj["visible"],
                            width, height)
    info = {}  # the forward writes n_pairs here
    out, acc = _Rasterize.apply(means2d.reshape(-1, 2), conics.reshape(-1, 3), opac_cn.reshape(-1),
                                feats.reshape(-1, X), binning, int(width), int(height), info)
    out, alphas = finish_outputs(out, acc, C, height, width, backgrounds, mode)
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


@contextmanager
def raster_threads(n: int | None, device="cpu"):
    """Run the compiled rasteriser on ``n`` threads (None: all cores; capped at numba's
    maximum), restored afterwards. A no-op (numba is not imported) for non-CPU devices."""
    if n is not None and int(n) < 1:
        from depthcli.errors import DepthcliError

        raise DepthcliError(f"--threads must be at least 1, got {n}", hint="omit --threads to use all cores")
    if str(device) != "cpu":
        yield None
        return
    import numba

    before = numba.get_num_threads()
    top = numba.config.NUMBA_NUM_THREADS
    want = top if n is None else min(int(n), top)
    numba.set_num_threads(want)
    try:
        yield want
    finally:
        numba.set_num_threads(before)
