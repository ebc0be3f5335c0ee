"""render(): the torch backend against gsplat's CUDA rasteriser (forward and backward).

Skipped unless a CUDA GPU and gsplat (``pip install 'depthcli[cuda]'``) are present.
"""

from __future__ import annotations

import math

import pytest
import torch

from depthcli.splat.render import gsplat_available, render

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
    pytest.mark.skipif(torch.cuda.is_available() and not gsplat_available(),
                       reason="gsplat not installed (pip install 'depthcli[cuda]')"),
]


def _scene(n, width, height, max_opacity, seed):
    """Random Gaussians 1-5 m in front of one camera, float32 on the GPU.

    Opacities stay below ``max_opacity``: with o < 0.35 every pixel where alpha >= 1/255
    lies within 3 sigma, so gsplat's 3-sigma tile culling (older versions) and the torch
    backend's exact alpha >= 1/255 footprint list the same pairs.
    """
    gen = torch.Generator().manual_seed(seed)
    f = 0.9 * width
    z = 1 + 4 * torch.rand(n, generator=gen)
    x = (torch.rand(n, generator=gen) * width - width / 2) / f * z
    y = (torch.rand(n, generator=gen) * height - height / 2) / f * z
    scene = dict(
        means=torch.stack([x, y, z], 1),
        quats=torch.randn(n, 4, generator=gen),
        scales=torch.exp(torch.empty(n, 3).uniform_(math.log(0.01), math.log(0.08), generator=gen)),
        opacities=0.05 + (max_opacity - 0.05) * torch.rand(n, generator=gen),
        colors=torch.rand(n, 3, generator=gen),
        viewmats=torch.eye(4)[None],
        Ks=torch.tensor([[[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]]]),
    )
    return {k: v.cuda() for k, v in scene.items()}


def _run(scene, width, height, mode, backend, weights):
    params = {k: scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
    out, alphas, meta = render(params["means"], params["quats"], params["scales"], params["opacities"],
                               params["colors"], scene["viewmats"], scene["Ks"], width, height, mode=mode,
                               backend=backend)
    ((out * weights[0]).sum() + (alphas * weights[1]).sum()).backward()
    grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in params.items()}
    return out.detach(), alphas.detach(), meta, grads


@pytest.mark.parametrize("mode", ["D", "ED", "RGB", "RGB+ED"])
def test_torch_backend_matches_gsplat(mode):
    W, H = 96, 64
    scene = _scene(2000, W, H, max_opacity=0.34, seed=0)
    X = {"D": 1, "ED": 1, "RGB": 3, "RGB+ED": 4}[mode]
    weights = (torch.randn(1, H, W, X, device="cuda"), torch.randn(1, H, W, 1, device="cuda"))
    o_t, a_t, m_t, g_t = _run(scene, W, H, mode, "torch", weights)
    o_g, a_g, m_g, g_g = _run(scene, W, H, mode, "gsplat", weights)
    assert m_t["backend"] == "torch" and m_g["backend"] == "gsplat"
    torch.testing.assert_close(m_t["means2d"], m_g["means2d"], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(m_t["depths"], m_g["depths"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a_t, a_g, atol=1e-4, rtol=1e-4)
    depth_range = float(o_g[..., -1].max() - o_g[..., -1][a_g[..., 0] > 0].min())
    if "D" in mode:
        assert (o_t[..., -1] - o_g[..., -1]).abs().max() <= 1e-4 * depth_range
    if "RGB" in mode:
        assert (o_t[..., :3] - o_g[..., :3]).abs().max() <= 1e-4
    for k in ("means", "quats", "scales", "opacities") + (("colors",) if "RGB" in mode else ()):
        ref = g_g[k]
        err = float((g_t[k] - ref).abs().max() / ref.abs().max().clamp(min=1e-12))
        assert err <= 2e-3, (k, err)


def test_auto_picks_gsplat_for_cuda_tensors():
    scene = _scene(100, 32, 24, max_opacity=0.9, seed=1)
    _, _, meta = render(*(scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")),
                        32, 24, backend="auto")
    assert meta["backend"] == "gsplat"
    assert meta["means2d"].shape == (1, 100, 2) and meta["radii"].shape == (1, 100)
