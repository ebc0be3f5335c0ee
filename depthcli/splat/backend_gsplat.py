"""gsplat (CUDA) backend of :func:`depthcli.splat.render.render`: a thin call to
``gsplat.rasterization`` (classic mode, unpacked, no SH). gsplat is imported lazily."""

from __future__ import annotations

from depthcli.errors import DepthcliError

_INSTALL_HINT = ("install depthcli[cuda] (pip install 'depthcli[cuda]') on a machine with an NVIDIA GPU, "
                 "or use backend='torch'")


def _import_gsplat():
    import torch

    if not torch.cuda.is_available():
        raise DepthcliError("render backend 'gsplat' needs a CUDA GPU, and none is available", hint=_INSTALL_HINT)
    try:
        from gsplat import rasterization
    except Exception as exc:  # ImportError or a failed CUDA extension build
        raise DepthcliError(f"render backend 'gsplat' is not usable: {exc}", hint=_INSTALL_HINT) from exc
    return rasterization


def render_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, mode, near_plane,
                  far_plane, eps2d, backgrounds, radius_clip):
    """Same contract as :func:`depthcli.splat.render.render` (inputs already validated)."""
    import torch

    from depthcli.splat.render import mode_depth_kind

    if mode_depth_kind(mode) == "dist":
        raise DepthcliError(
            f"render mode {mode!r} (distance to the centres) is not available with the gsplat backend",
            hint="use backend='cpu' or 'torch', or a z-depth mode (D, ED, RGB+D, RGB+ED)",
        )
    rasterization = _import_gsplat()
    if means.device.type != "cuda":
        raise DepthcliError(
            f"render backend 'gsplat' needs CUDA tensors, got tensors on {means.device}",
            hint="move the tensors to the GPU (.cuda()) or use backend='torch'",
        )
    C, N = viewmats.shape[0], means.shape[0]
    if colors is None:  # D / ED: gsplat replaces the colours by depths but checks their shape first
        colors = torch.zeros((N, 3), device=means.device, dtype=means.dtype)
    if backgrounds is not None:
        backgrounds = backgrounds.expand(C, 3) if backgrounds.dim() == 1 else backgrounds
        if "RGB" not in mode:
            backgrounds = None  # gsplat would replace them by zeros anyway
    render_colors, render_alphas, info = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, radius_clip=radius_clip,
        backgrounds=backgrounds, render_mode=mode, rasterize_mode="classic", packed=False,
        sh_degree=None,
    )
    radii = info["radii"]
    if radii.dim() == 3:  # gsplat >= 1.5 returns per-axis radii [C, N, 2]
        radii = radii.max(dim=-1).values
    means2d = info["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    meta = dict(info)
    meta.update(
        means2d=means2d,
        radii=radii.int(),
        depths=info["depths"],
        conics=info["conics"],
        n_pairs=int(info["flatten_ids"].numel()) if "flatten_ids" in info else -1,
        backend="gsplat",
    )
    return render_colors, render_alphas, meta
