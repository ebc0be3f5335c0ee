"""render(): torch backend against hand-computed values and the dense reference."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from depthcli.errors import DepthcliError
from depthcli.splat.render import render
from splat_reference import reference_render

F64 = torch.float64


def make_scene(n, *, saturated=False, n_cams=2, width=24, height=20, dtype=F64, seed=0):
    """Random Gaussians about 3 m in front of two cameras (the second one moved and turned).

    ``saturated``: large, nearly opaque, heavily overlapping Gaussians, so that the
    T <= 1e-4 termination fires at many pixels.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=F64)

    means = (torch.randn(n, 3, generator=gen, dtype=F64) * torch.tensor([0.6, 0.5, 0.3], dtype=F64)
             + torch.tensor([0.0, 0.0, 3.0], dtype=F64))
    quats = torch.randn(n, 4, generator=gen, dtype=F64)
    lo, hi = (math.log(0.08), math.log(0.3)) if saturated else (math.log(0.02), math.log(0.15))
    scales = torch.exp(lo + (hi - lo) * rand(n, 3))
    opac = 0.9 + 0.1 * rand(n) if saturated else 0.05 + 0.95 * rand(n)
    colors = rand(n, 3)
    viewmats = torch.eye(4, dtype=F64).repeat(n_cams, 1, 1)
    if n_cams > 1:
        a = 0.2
        viewmats[1, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]],
                                           dtype=F64)
        viewmats[1, :3, 3] = torch.tensor([0.2, -0.1, 0.3], dtype=F64)
    Ks = torch.tensor([[30.0, 0, width / 2 + 0.3], [0, 28.0, height / 2 - 0.2], [0, 0, 1]], dtype=F64)
    Ks = Ks.repeat(n_cams, 1, 1)
    scene = dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors, viewmats=viewmats, Ks=Ks)
    return {k: v.to(dtype) for k, v in scene.items()}, width, height


def _args(scene):
    return [scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]


def _rel_err(x, ref):
    return float((x - ref).abs().max() / ref.abs().max().clamp(min=1e-12))


# ----------------------------------------------------------------------------- hand-checked


def _one_camera(width=16, height=12, f=100.0, cx=8.5, cy=6.5):
    K = torch.tensor([[[f, 0, cx], [0, f, cy], [0, 0, 1]]], dtype=F64)
    return torch.eye(4, dtype=F64)[None], K, width, height


@pytest.mark.parametrize("mode", ["D", "ED", "RGB+ED"])
def test_single_isotropic_gaussian_by_hand(mode):
    # scale 0.02 m at z = 2 m with f = 100 px: projected std f s / z = 1 px, so the 2D
    # variance is 1 + eps2d = 1.3 px^2; the centre projects onto pixel centre (8.5, 6.5).
    viewmats, Ks, W, H = _one_camera()
    z, o, var = 2.0, 0.7, 1.3
    means = torch.tensor([[0.0, 0.0, z]], dtype=F64)
    quats = torch.tensor([[0.3, -0.2, 0.5, 0.1]], dtype=F64)  # any rotation of an isotropic Gaussian
    scales = torch.full((1, 3), 0.02, dtype=F64)
    colors = torch.tensor([[0.2, 0.4, 0.6]], dtype=F64)
    out, alphas, meta = render(means, quats, scales, torch.tensor([o], dtype=F64), colors, viewmats, Ks, W, H,
                               mode=mode, backend="torch")
    assert out.shape == (1, H, W, 4 if "RGB" in mode else 1)
    # centre pixel (row 6, col 8): sigma = 0 -> alpha = o
    assert alphas[0, 6, 8, 0].item() == pytest.approx(o, abs=1e-12)
    # one pixel right / one pixel diagonal: sigma = 0.5 d^2 / var
    assert alphas[0, 6, 9, 0].item() == pytest.approx(o * math.exp(-0.5 / var), abs=1e-12)
    assert alphas[0, 7, 9, 0].item() == pytest.approx(o * math.exp(-1.0 / var), abs=1e-12)
    # far corner: o exp(-sigma) < 1/255 -> skipped
    assert alphas[0, 0, 0, 0].item() == 0.0
    depth = out[0, 6, 8, -1].item()
    assert depth == pytest.approx(o * z if mode == "D" else z, abs=1e-12)
    if mode == "RGB+ED":
        assert out[0, 6, 8, :3].tolist() == pytest.approx([o * 0.2, o * 0.4, o * 0.6], abs=1e-12)
        assert out[0, 0, 0, -1].item() == 0.0  # nothing hit: expected depth 0 (invalid)
    assert meta["means2d"][0, 0].tolist() == pytest.approx([8.5, 6.5], abs=1e-12)
    # radius = ceil(3 sqrt(b + sqrt(max(0.01, b^2 - det)))) with b = var, det = var^2
    assert meta["radii"][0, 0].item() == math.ceil(3 * math.sqrt(var + 0.1))
    assert meta["depths"][0, 0].item() == pytest.approx(z)
    assert meta["backend"] == "torch"


def test_termination_by_hand():
    # Four Gaussians straight ahead at z = 1, 2, 3, 4 with alpha 0.95 at the centre pixel:
    # T = 1, 0.05, 0.0025, 1.25e-4 before them; the 4th would bring T to 6.25e-6 <= 1e-4,
    # so the pixel stops before it (the 4th is not included).
    viewmats, Ks, W, H = _one_camera()
    zs = [3.0, 1.0, 4.0, 2.0]  # given out of order: compositing sorts by depth
    means = torch.tensor([[0.0, 0.0, z] for z in zs], dtype=F64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 4, dtype=F64)
    scales = torch.tensor([[0.01 * z] * 3 for z in zs], dtype=F64)
    opac = torch.full((4,), 0.95, dtype=F64)
    out, alphas, _ = render(means, quats, scales, opac, None, viewmats, Ks, W, H, mode="D", backend="torch")
    a = 0.95
    w = [a, a * (1 - a), a * (1 - a) ** 2]
    assert alphas[0, 6, 8, 0].item() == pytest.approx(sum(w), abs=1e-12)
    assert out[0, 6, 8, 0].item() == pytest.approx(w[0] * 1 + w[1] * 2 + w[2] * 3, abs=1e-12)

    # alpha is clamped to 0.999: two fully opaque Gaussians -> T = 0.001 after the first,
    # the second would give 1e-6 <= 1e-4 and is excluded.
    out, alphas, _ = render(means[:2], quats[:2], scales[:2], torch.ones(2, dtype=F64), None, viewmats, Ks, W, H,
                            mode="D", backend="torch")
    assert alphas[0, 6, 8, 0].item() == pytest.approx(0.999, abs=1e-12)
    assert out[0, 6, 8, 0].item() == pytest.approx(0.999 * 1.0, abs=1e-12)


def test_culling_near_far_offimage():
    viewmats, Ks, W, H = _one_camera()
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0], [0.0, 0.0, 0.005], [50.0, 0.0, 2.0], [0.0, 0.0, 30.0]],
                         dtype=F64)
    n = len(means)
    quats = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=F64)
    scales = torch.full((n, 3), 0.02, dtype=F64)
    opac = torch.full((n,), 0.5, dtype=F64)
    out, alphas, meta = render(means, quats, scales, opac, None, viewmats, Ks, W, H, mode="ED", backend="torch",
                               far_plane=20.0)
    radii = meta["radii"][0].tolist()
    assert radii[0] > 0
    assert radii[1:] == [0, 0, 0, 0]  # behind, nearer than near_plane, off-image, beyond far_plane
    assert meta["radii"].dtype == torch.int32
    hit = out[0, ..., 0][alphas[0, ..., 0] > 0]  # only the Gaussian at z = 2 m is rendered
    assert hit.numel() > 0
    torch.testing.assert_close(hit, torch.full_like(hit, 2.0))


# ----------------------------------------------------------------------------- vs reference


@pytest.mark.parametrize("saturated", [False, True], ids=["random", "saturated"])
@pytest.mark.parametrize("mode", ["D", "ED", "RGB", "RGB+ED", "RGB+D", "d", "Ed", "RGB-d", "RGB-Ed"])
def test_forward_matches_dense_reference(mode, saturated):
    scene, W, H = make_scene(70, saturated=saturated, seed=1 + saturated)
    bg = torch.tensor([[0.1, 0.5, 0.9], [1.0, 0.0, 0.3]], dtype=F64) if mode in ("RGB+D", "RGB-d") else None
    out, alphas, meta = render(*_args(scene), W, H, mode=mode, backend="torch", backgrounds=bg)
    stats = {}
    ref, ref_alphas, ref_radii = reference_render(*_args(scene), W, H, mode=mode, backgrounds=bg, stats=stats)
    assert out.shape == ref.shape and alphas.shape == ref_alphas.shape
    if saturated:
        assert stats["n_stopped"] > 50  # the termination rule really is exercised
    assert stats["n_pairs"] == meta["n_pairs"]
    assert meta["radii"].tolist() == [[int(r) for r in rr] for rr in ref_radii]
    assert (alphas - ref_alphas).abs().max() <= 1e-5
    if mode != "RGB":
        depth_range = float(ref[..., -1].max() - ref[..., -1][ref_alphas[..., 0] > 0].min())
        assert (out[..., -1] - ref[..., -1]).abs().max() <= 1e-5 * depth_range
    if mode.startswith("RGB"):
        assert (out[..., :3] - ref[..., :3]).abs().max() <= 1e-5


def test_forward_float32_inputs_match_reference():
    scene, W, H = make_scene(70, dtype=torch.float32, seed=3)
    out, alphas, _ = render(*_args(scene), W, H, mode="RGB+ED", backend="torch")
    assert out.dtype == torch.float32
    ref, ref_alphas, _ = reference_render(*_args(scene), W, H, mode="RGB+ED")
    depth_range = float(ref[..., -1].max() - ref[..., -1][ref_alphas[..., 0] > 0].min())
    assert (out[..., -1].double() - ref[..., -1]).abs().max() <= 1e-5 * depth_range
    assert (out[..., :3].double() - ref[..., :3]).abs().max() <= 1e-5
    assert (alphas.double() - ref_alphas).abs().max() <= 1e-5


def _grads(fn, scene, mode, weights):
    params = {k: scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
    out, alphas = fn(*(params[k] for k in ("means", "quats", "scales", "opacities", "colors")),
                     scene["viewmats"], scene["Ks"], mode)
    loss = (out * weights[0]).sum() + (alphas * weights[1]).sum()
    loss.backward()
    return {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in params.items()}


@pytest.mark.parametrize("saturated", [False, True], ids=["random", "saturated"])
@pytest.mark.parametrize("mode", ["D", "ED", "RGB+ED", "Ed", "RGB-d"])
def test_gradients_match_dense_reference(mode, saturated):
    scene, W, H = make_scene(50, saturated=saturated, seed=10 + saturated)
    X = 4 if mode.startswith("RGB") else 1
    gen = torch.Generator().manual_seed(5)
    weights = (torch.randn(2, H, W, X, generator=gen, dtype=F64), torch.randn(2, H, W, 1, generator=gen, dtype=F64))

    def ours(m, q, s, o, c, vm, K, mode):
        return render(m, q, s, o, c, vm, K, W, H, mode=mode, backend="torch")[:2]

    def ref(m, q, s, o, c, vm, K, mode):
        return reference_render(m, q, s, o, c, vm, K, W, H, mode=mode)[:2]

    g_ours = _grads(ours, scene, mode, weights)
    g_ref = _grads(ref, scene, mode, weights)
    for k in ("means", "quats", "scales", "opacities") + (("colors",) if mode.startswith("RGB") else ()):
        assert g_ref[k].abs().max() > 0, k
        assert _rel_err(g_ours[k], g_ref[k]) <= 1e-4, k


def test_gradcheck_float64_tiny_scene():
    scene, W, H = make_scene(6, n_cams=1, width=10, height=8, seed=21)
    vm, K = scene["viewmats"], scene["Ks"]

    def f(means, scales, opac, colors):
        out, alphas, _ = render(means, scene["quats"], scales, opac, colors, vm, K, W, H, mode="RGB+ED",
                                backend="torch")
        return out, alphas

    inputs = tuple(scene[k].clone().requires_grad_(True) for k in ("means", "scales", "opacities", "colors"))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-7, atol=1e-6, rtol=1e-4)


def test_means2d_grad_is_retained_and_meta_shapes():
    scene, W, H = make_scene(30, seed=4)
    means = scene["means"].clone().requires_grad_(True)
    out, alphas, meta = render(means, *_args(scene)[1:], W, H, mode="RGB+ED", backend="torch")
    out.sum().backward()
    C, N = 2, 30
    assert meta["means2d"].shape == (C, N, 2) and meta["means2d"].grad is not None
    assert meta["means2d"].grad.shape == (C, N, 2)
    assert meta["radii"].shape == (C, N) and meta["depths"].shape == (C, N)
    # depths are camera-space z of the centres
    cam = torch.einsum("cij,nj->cni", scene["viewmats"][:, :3, :3], scene["means"]) + scene["viewmats"][:, None, :3, 3]
    torch.testing.assert_close(meta["depths"].detach(), cam[..., 2])
    assert isinstance(meta["n_pairs"], int) and meta["n_pairs"] > 0


def test_depth_chunks_give_the_same_result():
    """Front-to-back pass split into many depth chunks (skipping finished pixels) == one pass."""
    from depthcli.splat.backend_torch import render_torch

    scene, W, H = make_scene(60, saturated=True, seed=7)
    kw = dict(mode="RGB+ED", near_plane=0.01, far_plane=1e10, eps2d=0.3, backgrounds=None, radius_clip=0.0)
    weights = torch.randn(2, H, W, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    results = []
    for max_pairs in (10_000_000, 300):
        means = scene["means"].clone().requires_grad_(True)
        opac = scene["opacities"].clone().requires_grad_(True)
        args = _args(scene)
        args[0], args[3] = means, opac
        out, alphas, meta = render_torch(*args, W, H, max_pairs_per_chunk=max_pairs, **kw)
        ((out * weights).sum() + alphas.sum()).backward()
        results.append((out.detach(), alphas.detach(), means.grad, opac.grad, meta["n_pairs"], meta["n_candidates"]))
    (o1, a1, gm1, go1, p1, c1), (o2, a2, gm2, go2, p2, c2) = results
    torch.testing.assert_close(o2, o1, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(a2, a1, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(gm2, gm1, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(go2, go1, atol=1e-10, rtol=1e-8)
    assert p1 == p2
    assert c2 < c1  # later chunks skipped the pixels that had already terminated


def test_colors_per_camera_and_radius_clip():
    scene, W, H = make_scene(40, seed=8)
    colors_cn = torch.rand(2, 40, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    args = _args(scene)
    args[4] = colors_cn
    out, alphas, meta = render(*args, W, H, mode="RGB", backend="torch", radius_clip=3.0)
    ref, ref_alphas, ref_radii = reference_render(*args, W, H, mode="RGB", radius_clip=3.0)
    assert meta["radii"].tolist() == [[int(r) for r in rr] for rr in ref_radii]
    assert 0 < int((meta["radii"] > 0).sum()) < 80  # the clip removed some
    assert (out - ref).abs().max() <= 1e-5 and (alphas - ref_alphas).abs().max() <= 1e-5


def test_empty_scene_and_nothing_visible():
    scene, W, H = make_scene(5, seed=9)
    args = _args(scene)
    args[0] = args[0] * torch.tensor([1.0, 1.0, -1.0], dtype=F64)  # all behind the cameras
    out, alphas, meta = render(*args, W, H, mode="RGB+ED", backend="torch")
    assert out.abs().max() == 0 and alphas.abs().max() == 0 and meta["n_pairs"] == 0
    empty = [t[:0] for t in _args(scene)[:5]] + _args(scene)[5:]
    out, alphas, _ = render(*empty, W, H, mode="ED", backend="torch",
                            backgrounds=torch.tensor([1.0, 1.0, 1.0], dtype=F64))
    assert out.shape == (2, H, W, 1) and out.abs().max() == 0


# ----------------------------------------------------------------------------- errors, dispatch


def test_user_errors_are_depthcli_errors():
    scene, W, H = make_scene(4, seed=0)
    args = _args(scene)
    with pytest.raises(DepthcliError, match="means"):
        render(args[0][:, :2], *args[1:], W, H)
    with pytest.raises(DepthcliError, match="needs colors"):
        render(*args[:4], None, *args[5:], W, H, mode="RGB")
    with pytest.raises(DepthcliError, match="unknown render mode"):
        render(*args, W, H, mode="depth")
    with pytest.raises(DepthcliError, match="unknown render backend"):
        render(*args, W, H, backend="opengl")
    with pytest.raises(DepthcliError, match="Ks"):
        render(*args[:6], args[6][:1], W, H)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error path")
def test_gsplat_backend_without_cuda_names_the_extra():
    scene, W, H = make_scene(4, seed=0)
    with pytest.raises(DepthcliError) as info:
        render(*_args(scene), W, H, backend="gsplat")
    assert "depthcli[cuda]" in (info.value.hint or "")


def test_auto_backend_on_cpu_is_the_compiled_cpu_backend():
    scene, W, H = make_scene(4, seed=0)
    assert render(*_args(scene), W, H, backend="auto")[2]["backend"] == "cpu"


def test_import_is_light():
    code = ("import sys, depthcli.splat, depthcli.splat.render; "
            "bad = [m for m in ('torch', 'gsplat', 'numpy', 'numba') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(not torch.backends.mps.is_available(), reason="no Apple MPS device")
def test_mps_matches_cpu():  # pragma: no cover - only on Apple silicon
    scene, W, H = make_scene(40, dtype=torch.float32, seed=2)
    cpu = render(*_args(scene), W, H, mode="RGB+ED", backend="torch")
    mps = render(*[t.to("mps") for t in _args(scene)], W, H, mode="RGB+ED", backend="torch")
    torch.testing.assert_close(mps[0].cpu(), cpu[0], atol=1e-4, rtol=1e-4)
