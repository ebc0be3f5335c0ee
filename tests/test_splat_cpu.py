"""render(backend="cpu"): the compiled CPU rasteriser against the torch backend, the dense
float64 reference (tests/splat_reference.py) and gsplat's own pure-torch projection."""

from __future__ import annotations

import math

import pytest
import torch

from depthcli.splat.render import MODES, render, resolve_backend
from splat_reference import reference_render
from test_splat_render import F64, _args, _rel_err, make_scene

numba = pytest.importorskip("numba")

W, H = 40, 30  # spans several 16x16 tiles, with partial tiles at the right and bottom
DEPTH_MODES = [m for m in MODES if m != "RGB"]


def degenerate_scene(seed=0):
    """A camera at the origin looking down +z and Gaussians that stress the edge cases:
    tiny (sub-pixel: eps2d dominates), behind the camera, nearer than the near plane,
    off screen (but with a footprint reaching into the image), huge (covering the whole
    image), needle-thin (nearly singular 2D covariance), opacity below 1/255, opacity 1
    (alpha clamped to 0.999), and ordinary ones in between."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.rand(*shape, generator=gen, dtype=F64)

    groups = []

    def add(n, xy_spread, z, scale, opac):
        m = torch.cat([(rnd(n, 2) - 0.5) * 2 * xy_spread, torch.as_tensor(z, dtype=F64).reshape(-1, 1).expand(n, 1)], 1)
        groups.append((m, torch.as_tensor(scale, dtype=F64).expand(n, 3).clone(),
                       torch.as_tensor(opac, dtype=F64).expand(n).clone()))

    add(12, 1.0, 3.0, 1e-4, 0.9)  # tiny
    add(4, 1.0, -2.0, 0.2, 0.9)  # behind the camera
    add(3, 0.1, 0.004, 0.01, 0.9)  # nearer than the near plane
    add(6, 0.0, 3.0, 0.25, 0.8)  # off screen, recentred below
    groups[-1][0][:, 0] = torch.tensor([2.6, -2.6, 2.8, -2.9, 0.0, 0.3], dtype=F64)
    groups[-1][0][:, 1] = torch.tensor([0.0, 0.3, 2.2, -2.1, 2.3, -2.4], dtype=F64)
    add(2, 0.2, 4.5, 2.0, 0.6)  # huge: covers the image
    add(6, 1.0, 2.5, 0.1, 0.7)  # needles: one long axis, two thin ones
    groups[-1][1][:, 1:] = 1e-4
    add(4, 1.0, 2.0, 0.1, 0.003)  # below 1/255: never rendered
    add(4, 0.5, 3.5, 0.15, 1.0)  # fully opaque: alpha clamped
    add(20, 1.0, 2.0 + 2.0 * rnd(20), 0.05, 0.5)  # ordinary
    means = torch.cat([g[0] for g in groups])
    scales = torch.cat([g[1] for g in groups])
    opac = torch.cat([g[2] for g in groups])
    n = means.shape[0]
    quats = torch.randn(n, 4, generator=gen, dtype=F64)
    colors = rnd(n, 3)
    viewmats = torch.eye(4, dtype=F64)[None]
    Ks = torch.tensor([[[35.0, 0, W / 2], [0, 35.0, H / 2], [0, 0, 1]]], dtype=F64)
    return dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors, viewmats=viewmats, Ks=Ks)


def scene_of(kind):
    if kind == "degenerate":
        return degenerate_scene(seed=3)
    scene, _, _ = make_scene(60, saturated=kind == "saturated", seed=30 + (kind == "saturated"), width=W, height=H)
    return scene


def _render(scene, mode, backend, params=None, **kw):
    args = _args(scene)
    if params is not None:
        args[:5] = [params[k] for k in ("means", "quats", "scales", "opacities", "colors")]
    return render(*args, W, H, mode=mode, backend=backend, **kw)


def _check_close(out, alphas, ref, ref_alphas, mode, tol):
    assert out.shape == ref.shape and alphas.shape == ref_alphas.shape
    assert (alphas - ref_alphas).abs().max() <= tol
    if mode.startswith("RGB"):
        assert (out[..., :3] - ref[..., :3]).abs().max() <= tol
    if mode != "RGB":
        hit = ref_alphas[..., 0] > 0
        scale = float(ref[..., -1][hit].abs().max()) if hit.any() else 1.0
        assert (out[..., -1] - ref[..., -1]).abs().max() <= tol * scale


@pytest.mark.parametrize("kind", ["random", "saturated", "degenerate"])
@pytest.mark.parametrize("mode", MODES)
def test_forward_matches_torch_backend_and_reference(mode, kind):
    scene = scene_of(kind)
    bg = torch.tensor([0.2, 0.6, 1.0], dtype=F64) if mode in ("RGB+D", "RGB-Ed") else None
    out, alphas, meta = _render(scene, mode, "cpu", backgrounds=bg)
    t_out, t_alphas, t_meta = _render(scene, mode, "torch", backgrounds=bg)
    assert meta["backend"] == "cpu" and out.dtype == F64
    assert meta["radii"].tolist() == t_meta["radii"].tolist()
    # float32 kernels: the accepted pair set is the same except for float rounding at the thresholds
    assert abs(meta["n_pairs"] - t_meta["n_pairs"]) <= max(2, 1e-3 * t_meta["n_pairs"])
    assert meta["n_pairs"] > 0
    _check_close(out, alphas, t_out, t_alphas, mode, 2e-5)
    stats = {}
    ref, ref_alphas, _ = reference_render(*_args(scene), W, H, mode=mode, backgrounds=bg, stats=stats)
    if kind == "saturated":
        assert stats["n_stopped"] > 50  # the T <= 1e-4 termination really happens
    _check_close(out, alphas, ref, ref_alphas, mode, 2e-5)


def _grads(scene, mode, backend, weights):
    params = {k: scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
    if backend == "reference":
        out, alphas, _ = reference_render(*(params[k] for k in ("means", "quats", "scales", "opacities", "colors")),
                                          scene["viewmats"], scene["Ks"], W, H, mode=mode)
    else:
        out, alphas, _ = _render(scene, mode, backend, params)
    ((out * weights[0][..., :out.shape[-1]]).sum() + (alphas * weights[1]).sum()).backward()
    return {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in params.items()}


@pytest.mark.parametrize("kind", ["random", "saturated", "degenerate"])
@pytest.mark.parametrize("mode", ["RGB", "D", "ED", "RGB+ED", "Ed", "RGB-d"])
def test_gradients_match_torch_backend_and_reference(mode, kind):
    scene = scene_of(kind)
    C = scene["viewmats"].shape[0]
    gen = torch.Generator().manual_seed(7)
    weights = (torch.randn(C, H, W, 4, generator=gen, dtype=F64), torch.randn(C, H, W, 1, generator=gen, dtype=F64))
    g_cpu = _grads(scene, mode, "cpu", weights)
    g_torch = _grads(scene, mode, "torch", weights)
    g_ref = _grads(scene, mode, "reference", weights) if kind != "saturated" or mode in ("ED", "RGB+ED") else None
    names = ("means", "quats", "scales", "opacities") + (("colors",) if mode.startswith("RGB") else ())
    for k in names:
        assert g_torch[k].abs().max() > 0, k
        assert _rel_err(g_cpu[k], g_torch[k]) <= 2e-4, k
        if g_ref is not None:
            assert _rel_err(g_cpu[k], g_ref[k]) <= 2e-4, k
    if not mode.startswith("RGB"):
        assert g_cpu["colors"].abs().max() == 0


def test_means2d_grad_for_densification_matches_torch_backend():
    scene = scene_of("random")
    grads = []
    for backend in ("cpu", "torch"):
        means = scene["means"].clone().requires_grad_(True)
        args = _args(scene)
        args[0] = means
        out, alphas, meta = render(*args, W, H, mode="RGB+ED", backend=backend)
        (out.sum() + alphas.sum()).backward()
        assert meta["means2d"].grad is not None and meta["means2d"].grad.shape == (2, 60, 2)
        grads.append(meta["means2d"].grad)
    assert _rel_err(grads[0], grads[1]) <= 2e-4


def test_hit_distance_is_the_distance_to_the_centre_by_hand():
    # one small Gaussian at (0.6, -0.8, 2.4) m: distance sqrt(0.36 + 0.64 + 5.76) = 2.6 m, z = 2.4 m
    means = torch.tensor([[0.6, -0.8, 2.4]], dtype=F64)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=F64)
    scales = torch.full((1, 3), 0.05, dtype=F64)
    opac = torch.tensor([0.8], dtype=F64)
    K = torch.tensor([[[40.0, 0, 20.0], [0, 40.0, 15.0], [0, 0, 1]]], dtype=F64)
    vm = torch.eye(4, dtype=F64)[None]
    for backend in ("cpu", "torch"):
        ed, alphas, _ = render(means, quats, scales, opac, None, vm, K, W, H, mode="ED", backend=backend)
        hd, _, _ = render(means, quats, scales, opac, None, vm, K, W, H, mode="Ed", backend=backend)
        hit = alphas[0, ..., 0] > 0
        assert int(hit.sum()) > 4
        assert torch.allclose(ed[0, ..., 0][hit], torch.full_like(ed[0, ..., 0][hit], 2.4), atol=1e-5)
        assert torch.allclose(hd[0, ..., 0][hit], torch.full_like(hd[0, ..., 0][hit], 2.6), atol=1e-5)
        d, _, _ = render(means, quats, scales, opac, None, vm, K, W, H, mode="d", backend=backend)
        torch.testing.assert_close(d[0, ..., 0], 2.6 * alphas[0, ..., 0], atol=1e-5, rtol=0)


def test_thread_count_does_not_change_results():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread here (NUMBA_NUM_THREADS=1)")
    scene = scene_of("saturated")
    gen = torch.Generator().manual_seed(1)
    weights = (torch.randn(2, H, W, 4, generator=gen, dtype=F64), torch.randn(2, H, W, 1, generator=gen, dtype=F64))
    before = numba.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            numba.set_num_threads(n)
            out, alphas, _ = _render(scene, "RGB+ED", "cpu")
            results.append((out, alphas, _grads(scene, "RGB+ED", "cpu", weights)))
    finally:
        numba.set_num_threads(before)
    (o1, a1, g1), (o2, a2, g2) = results
    # each tile is done by one thread and gradients are summed in a fixed order: bitwise equal
    assert torch.equal(o1, o2) and torch.equal(a1, a2)
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k


def test_float32_inputs_and_no_grad():
    scene = {k: v.float() for k, v in scene_of("random").items()}
    with torch.no_grad():
        out, alphas, meta = _render(scene, "RGB+ED", "cpu")
    assert out.dtype == torch.float32 and not out.requires_grad
    ref, ref_alphas, _ = reference_render(*_args(scene), W, H, mode="RGB+ED")
    _check_close(out.double(), alphas.double(), ref, ref_alphas, "RGB+ED", 2e-5)


def test_empty_and_invisible_scenes():
    scene = scene_of("random")
    args = _args(scene)
    args[0] = args[0] * torch.tensor([1.0, 1.0, -1.0], dtype=F64)  # all behind the cameras
    out, alphas, meta = render(*args, W, H, mode="RGB+ED", backend="cpu")
    assert out.abs().max() == 0 and alphas.abs().max() == 0 and meta["n_pairs"] == 0
    empty = [t[:0] for t in _args(scene)[:5]] + _args(scene)[5:]
    out, alphas, _ = render(*empty, W, H, mode="Ed", backend="cpu")
    assert out.shape == (2, H, W, 1) and out.abs().max() == 0


def test_auto_backend_is_cpu_for_cpu_tensors():
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    assert resolve_backend("auto", torch.device("mps")) == "torch"
    scene = scene_of("random")
    assert _render(scene, "ED", "auto")[2]["backend"] == "cpu"


def _multi_camera(scene):
    """The scene seen by its camera and by a second one, moved and turned (two cameras per call)."""
    a = 0.3
    R = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=F64)
    vm2 = torch.eye(4, dtype=F64)
    vm2[:3, :3] = R
    vm2[:3, 3] = torch.tensor([0.2, -0.1, 0.3], dtype=F64)
    Ks2 = scene["Ks"][0].clone()
    Ks2[0, 0] *= 1.2
    return {**scene, "viewmats": torch.stack([scene["viewmats"][0], vm2]), "Ks": torch.stack([scene["Ks"][0], Ks2])}


@pytest.mark.parametrize("kind", ["random", "saturated", "degenerate", "two cameras"])
def test_compiled_projection_and_its_backward_match_the_torch_projection(kind):
    """The numba projection (forward and hand-written backward) against autograd through
    the torch backend's projection, in float64: every output, every input gradient."""
    from depthcli.splat.backend_cpu import project_cpu
    from depthcli.splat.backend_torch import project_gaussians

    scene = _multi_camera(scene_of("random")) if kind == "two cameras" else scene_of(kind)
    gen = torch.Generator().manual_seed(11)
    results = []
    for fn in (project_cpu, project_gaussians):
        params = {k: scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales")}
        proj = fn(params["means"], params["quats"], params["scales"], scene["viewmats"], scene["Ks"], W, H,
                  0.01, 1e10, 0.3, 0.0)
        gen.manual_seed(11)
        loss = sum((proj[k] * torch.randn(proj[k].shape, generator=gen, dtype=F64)).sum()
                   for k in ("means2d", "depths", "dists", "conics"))
        loss.backward()
        results.append((proj, {k: p.grad for k, p in params.items()}))
    (ours, g_ours), (ref, g_ref) = results
    assert ours["radii"].tolist() == ref["radii"].tolist()
    assert ours["visible"].tolist() == ref["visible"].tolist() and int(ref["visible"].sum()) > 5
    for k in ("means2d", "depths", "dists", "cov2d", "conics"):
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-10, atol=1e-10, msg=k)
    for k in ("means", "quats", "scales"):
        assert g_ref[k].abs().max() > 0
        assert _rel_err(g_ours[k], g_ref[k]) <= 1e-9, k


def test_projection_matches_gsplat_pure_torch_reference():
    """depthcli's projection against gsplat's own pure-torch ``_fully_fused_projection``
    (runs on CPU, no CUDA): means2d, depths and conics of every Gaussian both keep, and
    the same culling. gsplat 1.5.3's radii are per axis, ``ceil(3.33 sqrt(cov2d_ii))``,
    while depthcli (and gsplat's CUDA rasteriser up to 1.4) uses one radius
    ``ceil(3 sqrt(largest eigenvalue))``: compared through the covariance."""
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat is not installed (pip install gsplat)")
    from depthcli.splat.backend_cpu import project_cpu
    from depthcli.splat.backend_torch import project_gaussians

    for scene, project in [(s, p) for s in (scene_of("random"), scene_of("saturated"), scene_of("degenerate"))
                           for p in (project_gaussians, project_cpu)]:
        means, quats, scales = scene["means"], scene["quats"], scene["scales"]
        vm, Ks = scene["viewmats"], scene["Ks"]
        covars, _ = torch_impl._quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False,
                                                          triu=False)
        radii_g, means2d_g, depths_g, conics_g, _ = torch_impl._fully_fused_projection(
            means, covars, vm, Ks, W, H, eps2d=0.3, near_plane=0.01, far_plane=1e10)
        ours = project(means, quats, scales, vm, Ks, W, H, 0.01, 1e10, 0.3, 0.0)
        torch.testing.assert_close(ours["depths"], depths_g, rtol=1e-12, atol=1e-12)
        both = ours["visible"] & (radii_g > 0).all(-1)
        assert int(both.sum()) > 10
        torch.testing.assert_close(ours["means2d"][both], means2d_g[both], rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(ours["conics"][both], conics_g[both], rtol=1e-9, atol=1e-12)
        cov = ours["cov2d"][both]
        expect = torch.stack([torch.ceil(3.33 * cov[:, 0].sqrt()), torch.ceil(3.33 * cov[:, 2].sqrt())], -1)
        assert radii_g[both].tolist() == expect.int().tolist()
        # culling: in front of the near plane, behind the camera -> culled by both
        z = ours["depths"]
        assert not (ours["visible"] & (z < 0.01)).any() and not ((radii_g > 0).all(-1) & (z < 0.01)).any()
        # what gsplat keeps and depthcli culls (or back) only differs by the radius used for
        # the off-image test: such Gaussians lie within their radius of the image border
        differ = ours["visible"] ^ (radii_g > 0).all(-1)
        m2 = means2d_g[differ]
        far_out = math.inf if m2.numel() == 0 else None
        if far_out is None:
            r = torch.maximum(radii_g[differ].max(-1).values.double(), ours["radii"][differ].double()) + 1
            inside = (m2[:, 0] > r) & (m2[:, 0] < W - r) & (m2[:, 1] > r) & (m2[:, 1] < H - r)
            assert not inside.any()


def test_raster_threads_sets_and_restores_numba_threads():
    from depthcli.errors import DepthcliError
    from depthcli.splat.backend_cpu import raster_threads

    before = numba.get_num_threads()
    with raster_threads(1) as n:
        assert n == 1 and numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with raster_threads(None) as n:
        assert n == numba.config.NUMBA_NUM_THREADS == numba.get_num_threads()
    with raster_threads(10_000) as n:  # capped at numba's maximum
        assert n == numba.config.NUMBA_NUM_THREADS
    with raster_threads(3, "cuda") as n:  # no-op off the CPU
        assert n is None
    with pytest.raises(DepthcliError, match="--threads"):
        with raster_threads(0):
            pass
    assert numba.get_num_threads() == before


def test_gsplat_backend_refuses_hit_distance_modes():
    scene = scene_of("random")
    from depthcli.errors import DepthcliError

    with pytest.raises(DepthcliError, match="not available with the gsplat backend"):
        _render(scene, "Ed", "gsplat")


def test_fast_exp_matches_float64_exp():
    # the kernels' branch-free float32 exp(-s) against numpy's float64 exp over the range it
    # serves (sigma in [0, 8]; only sigma <= log(255) ~ 5.5 is ever composited)
    import numpy as np

    from depthcli.splat._cpu_kernels import exp_neg

    @numba.njit(cache=False)
    def run(xs):
        out = np.empty_like(xs)
        for i in range(xs.shape[0]):
            out[i] = exp_neg(xs[i])
        return out

    xs = np.concatenate([np.linspace(0, 8, 20001), [0.0, math.log(2), 5.5, 8.0]]).astype(np.float32)
    ref = np.exp(-xs.astype(np.float64))
    rel = np.abs(run(xs).astype(np.float64) - ref) / ref
    assert rel.max() <= 3e-7
    assert run(np.array([0.0], np.float32))[0] == 1.0
