"""splat-train / render: losses, metrics, densification, resume, bad input, end-to-end quality.

The synthetic scene is ray-cast analytically (a sphere on a floor before a wall),
so its depth is exact; the real captures come from ../shared/data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


torch = pytest.importorskip("torch")


# ----------------------------------------------------------------------------- synthetic scene


def look_at(eye, target, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """cam_from_world of a camera at ``eye`` looking at ``target`` (OpenCV axes, y down)."""
    eye = np.asarray(eye, float)
    z = np.asarray(target, float) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, float))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ eye
    return T


def raycast(cam_from_world, K, W, H, sphere_r=0.6, floor_y=0.6, wall_z=1.5):
    """Exact z-depth and an RGB texture of: sphere (r 0.6 at the origin), floor y = 0.6, wall z = 1.5."""
    world_from_cam = np.linalg.inv(cam_from_world)
    v, u = np.mgrid[0:H, 0:W] + 0.5
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # camera z = 1
    d = d_cam @ world_from_cam[:3, :3].T
    o = world_from_cam[:3, 3]
    a = (d * d).sum(-1)
    b = 2 * (d @ o)
    c = o @ o - sphere_r**2
    disc = b * b - 4 * a * c
    t_sphere = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = (floor_y - o[1]) / d[..., 1]
        t_wall = (wall_z - o[2]) / d[..., 2]
    ts = [np.where(np.isfinite(t) & (t > 0), t, np.inf) for t in (t_sphere, t_floor, t_wall)]
    t = np.minimum.reduce(ts)
    depth = np.where(np.isfinite(t), t, 0.0)  # ray parameter with camera-z 1 = z-depth
    p = o + np.where(np.isfinite(t), t, 0)[..., None] * d
    checker = (np.floor(p[..., 0] * 4) + np.floor(p[..., 1] * 4) + np.floor(p[..., 2] * 4)) % 2
    rgb = np.stack([0.2 + 0.6 * checker, 0.5 + 0.3 * np.tanh(p[..., 0]), 0.5 - 0.3 * np.tanh(p[..., 1])], -1)
    return depth.astype(np.float32), (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def make_scene(folder: Path, n=16, W=64, H=48, rgb=False, pose_error: dict | None = None) -> Path:
    """A depth dataset of ``n`` views on an arc; view order interleaved so held-out views are interior.

    ``pose_error`` {frame index: 4x4 E}: that frame's depth is ray-cast at the true pose T but
    the dataset records E @ T (a camera whose recorded pose is off, as with SLAM poses).
    """
    from depthcli.io.dataset import DatasetWriter

    K = np.array([[W * 0.9, 0, W / 2], [0, W * 0.9, H / 2], [0, 0, 1.0]])
    w = DatasetWriter(Path(folder), depth_units="m", source={"kind": "test-scene"})
    for i in range(n):
        j = (i * 5 + n // 2) % n  # frame 0 (held out) sits mid-arc
        ang = -0.6 + 1.2 * j / max(n - 1, 1)
        T = look_at((2.5 * np.sin(ang), -0.3 - 0.2 * np.cos(3 * ang), -2.5 * np.cos(ang)), (0, 0.1, 0))
        depth, img = raycast(T, K, W, H)
        recorded = (pose_error or {}).get(i, np.eye(4)) @ T
        w.add_frame(f"f{i:03d}", depth, K, recorded, image=img if rgb else None)
    w.close()
    return Path(folder)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("scene") / "ds", rgb=True)


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("small") / "ds", n=6, W=32, H=24)


def test_raycast_scene_is_consistent():
    """The helper itself: back-projected depth of one view lands on the analytic surfaces."""
    from depthcli.depth import backproject_depth

    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    T = look_at((0.0, -0.3, -2.5), (0, 0.1, 0))
    depth, _ = raycast(T, K, 64, 48)
    pts, _ = backproject_depth(depth, K, T)
    on_sphere = np.abs(np.linalg.norm(pts, axis=1) - 0.6) < 1e-6
    on_floor = np.abs(pts[:, 1] - 0.6) < 1e-6
    on_wall = np.abs(pts[:, 2] - 1.5) < 1e-6
    assert (on_sphere | on_floor | on_wall).all() and on_sphere.sum() > 100
    # centre pixel looks at the sphere from distance |eye| = sqrt(0.3^2 + 2.5^2)... roughly 2.5 - 0.6
    assert 1.7 < depth[24, 32] < 2.1


# ----------------------------------------------------------------------------- losses and metrics


def test_losses_hand_values():
    from depthcli.splat.losses import coverage_loss, depth_l1, gradient_loss, masked_l1, multiscale_loss, ssim

    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    tgt = torch.tensor([[2.0, 2.0], [0.0, 2.0]])
    mask = tgt > 0
    assert masked_l1(pred, tgt, mask).item() == pytest.approx((1 + 0 + 2) / 3)
    assert depth_l1(pred, tgt, mask, "disparity").item() == pytest.approx((0.5 + 0 + 0.25) / 3)
    # gradients: x-diffs (row 0: pred 1, tgt 0; row 1 invalid pair); y-diffs (col 0 invalid; col 1: pred 2, tgt 0)
    assert gradient_loss(pred, tgt, mask).item() == pytest.approx((1 + 2) / 2)
    # a constant offset of 0.5 survives every pyramid level unchanged
    t = torch.rand(16, 16) + 1
    m = torch.rand(16, 16) > 0.3
    assert multiscale_loss(t + 0.5, t, m, levels=3).item() == pytest.approx(0.5, rel=1e-5)
    assert multiscale_loss(t, t, m).item() == pytest.approx(0.0, abs=1e-6)
    alpha = torch.tensor([[0.5, 1.0], [0.0, 0.25]])
    assert coverage_loss(alpha, mask).item() == pytest.approx((0.5 + 0 + 0.75) / 3)
    img = torch.rand(1, 20, 20, 3)
    assert ssim(img, img).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(img, 1 - img).item() < 0.5
    empty = torch.zeros(2, 2, dtype=torch.bool)
    assert masked_l1(pred, tgt, empty).item() == 0.0


def test_depth_metrics_hand_values():
    from depthcli.splat.trainer import depth_metrics

    gt = np.array([[1.0, 2.0], [4.0, 0.0]])
    pred = np.array([[1.1, 2.0], [0.0, 5.0]])  # the 4.0 pixel is not rendered
    m = depth_metrics(pred, gt)
    assert m["coverage"] == pytest.approx(2 / 3)
    assert m["abs_rel"] == pytest.approx((0.1 / 1.0 + 0.0) / 2)
    assert m["rmse"] == pytest.approx(np.sqrt(0.01 / 2))
    assert m["delta1"] == 1.0
    alpha = np.array([[0.9, 0.4], [1.0, 1.0]])
    m2 = depth_metrics(pred, gt, alpha, min_alpha=0.5)
    assert m2["coverage"] == pytest.approx(1 / 3) and m2["abs_rel"] == pytest.approx(0.1)


def test_voxel_downsample_and_scene_norm():
    from depthcli.geometry import project_points
    from depthcli.splat.model import SceneNorm, voxel_downsample

    pts = np.array([[0.1, 0.1, 0.1], [0.3, 0.3, 0.3], [1.5, 0.2, 0.2]])
    cols = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    out, oc = voxel_downsample(pts, 1.0, cols)
    np.testing.assert_allclose(out, [[0.2, 0.2, 0.2], [1.5, 0.2, 0.2]])
    np.testing.assert_allclose(oc, [[0.5, 0.5, 0], [0, 0, 1]])
    # a world point seen through the normalised camera keeps its pixel; its depth shrinks by the scale
    norm = SceneNorm(center=np.array([1.0, -2.0, 3.0]), scale=2.5)
    T = look_at((0.5, -0.2, -3.0), (0.0, 0.0, 0.0))
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    X = np.array([[0.2, 0.1, 0.4]])
    uv, z = project_points(X, K, T)
    uv_n, z_n = project_points(norm.points_to_norm(X), K, norm.viewmat_to_norm(T))
    np.testing.assert_allclose(uv_n, uv, atol=1e-9)
    np.testing.assert_allclose(z_n * norm.scale, z, rtol=1e-12)


# ----------------------------------------------------------------------------- densification


def _params(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = {
        "means": torch.randn(n, 3, generator=g),
        "scales": torch.log(torch.full((n, 3), 0.05)),
        "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        "opacities": torch.zeros(n),
    }
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in p.items()})
    opts = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}
    (sum((v**2).sum() for v in params.values())).backward()
    for o in opts.values():
        o.step()
    return params, opts


def test_densify_clone_split_prune_keep_optimizer_in_sync():
    from depthcli.splat.trainer import torch_threads

    with torch_threads(1, "cpu"):  # tiny tensors: one thread is much faster on a busy machine
        _densify_checks()


def _densify_checks():
    from depthcli.splat.densify import TorchDensifyStrategy, duplicate, remove, split

    params, opts = _params(6)
    state = {"grad2d": torch.arange(6.0), "count": torch.ones(6)}
    m0 = params["means"].detach().clone()
    duplicate(params, opts, state, torch.tensor([True, False, False, True, False, False]))
    assert params["means"].shape[0] == 8
    assert torch.equal(params["means"][6:], m0[[0, 3]])
    for k, o in opts.items():
        st = o.state[params[k]]
        assert st["exp_avg"].shape == params[k].shape and torch.all(st["exp_avg"][6:] == 0)
        assert o.param_groups[0]["params"][0] is params[k]
    assert state["grad2d"].shape[0] == 8
    parent_scale = torch.exp(params["scales"][1]).detach()
    split(params, opts, state, torch.tensor([False, True] + [False] * 6))
    assert params["means"].shape[0] == 9
    np.testing.assert_allclose(torch.exp(params["scales"][-2:]).detach().numpy(),
                               (parent_scale / 1.6).expand(2, 3).numpy(), rtol=1e-5)
    # the two children straddle the parent (offsets of one sample)
    assert torch.linalg.norm(params["means"][-2:].mean(0) - m0[1]) < 0.2
    remove(params, opts, state, torch.arange(9) % 3 == 0)
    assert params["means"].shape[0] == 6 and opts["means"].state[params["means"]]["exp_avg"].shape == (6, 3)
    # the strategy: high-gradient small Gaussians are cloned, low opacity pruned
    strat = TorchDensifyStrategy(refine_start=0, refine_every=1, grow_grad2d=0.5, grow_scale3d=0.1, reset_every=0)
    st = strat.initialize_state(1.0)
    st["grad2d"] = torch.tensor([1.0, 0, 0, 0, 0, 0])
    st["count"] = torch.ones(6)
    with torch.no_grad():
        params["opacities"][2] = -10.0  # opacity 4.5e-5 < prune_opa
    grown = strat._grow(params, opts, st)
    pruned = strat._prune(params, opts, st, step=1)
    assert grown == {"cloned": 1, "split": 0} and pruned == 1 and params["means"].shape[0] == 6


def test_split_keeps_covariance_direction():
    from depthcli.splat.densify import quat_to_rotmat

    q = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    R = quat_to_rotmat(q)
    np.testing.assert_allclose((R @ R.transpose(1, 2)).numpy(), np.eye(3)[None].repeat(5, 0), atol=1e-5)
    np.testing.assert_allclose(torch.linalg.det(R).numpy(), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- training


def _cfg(ds, out, **kw):
    from depthcli.splat.trainer import SplatTrainConfig

    base = dict(steps=40, eval_every=0, checkpoint_every=20, progress=False, refine_start=5, refine_every=10,
                grow_grad2d=2e-4, max_init_points=300, max_gaussians=600)
    base.update(kw)
    return SplatTrainConfig(ds, out, **base)


@pytest.mark.parametrize("pose_opt", [False, True])
def test_resume_matches_uninterrupted_run(small_scene, tmp_path, pose_opt):
    """N steps straight == N/2 steps, 'killed', then --resume (CPU, fixed seed): identical parameters
    (with --pose-opt, the pose corrections and their optimiser cross the checkpoint too)."""
    from depthcli.splat.trainer import train_splats

    a = train_splats(_cfg(small_scene, tmp_path / "a", pose_opt=pose_opt))
    r = train_splats(_cfg(small_scene, tmp_path / "b", stop_at=20, pose_opt=pose_opt))
    assert r["interrupted_at"] == 20 and not (tmp_path / "b" / "splats.ply").exists()
    with pytest.raises(Exception, match="pose-opt"):
        train_splats(_cfg(small_scene, tmp_path / "b", resume=True, pose_opt=not pose_opt))
    b = train_splats(_cfg(small_scene, tmp_path / "b", resume=True, pose_opt=pose_opt))
    pa = torch.load(tmp_path / "a" / "checkpoints" / "step_000040.pt", weights_only=False)["params"]
    pb = torch.load(tmp_path / "b" / "checkpoints" / "step_000040.pt", weights_only=False)["params"]
    if pose_opt:
        xa, xb = (torch.load(tmp_path / j / "checkpoints" / "step_000040.pt", weights_only=False)["pose_xi"] for j in "ab")
        assert torch.equal(xa, xb) and xa.abs().max() > 0
    assert a["gaussians"] == b["gaussians"]
    assert pb["means"].shape[0] == a["gaussians"]
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    assert (tmp_path / "a" / "splats.ply").read_bytes() == (tmp_path / "b" / "splats.ply").read_bytes()
    # densification did happen on the way (so its state crossed the checkpoint)
    init = json.loads((tmp_path / "a" / "metrics.json").read_text())["init"]["init_points"]
    assert a["gaussians"] != init
    assert len(list((tmp_path / "a" / "checkpoints").glob("step_*.pt"))) == 2


def test_d_mode_with_coverage_term_trains(small_scene, tmp_path):
    """Accumulated depth "D" trains too; the coverage term keeps alpha (hence D) near full."""
    from depthcli.splat.trainer import train_splats

    s = train_splats(_cfg(small_scene, tmp_path / "d", mode="D", steps=30, checkpoint_every=30))
    assert s["mode"] == "D" and s["heldout"]["coverage"] > 0.9 and s["heldout"]["abs_rel"] < 0.2


def test_ply_round_trip_renders_the_same_depth(small_scene, tmp_path):
    """splats.ply (world frame) renders what the training-frame parameters render, x scale."""
    from depthcli.io.dataset import load_dataset
    from depthcli.io.ply import read_splats_ply
    from depthcli.splat.model import SceneNorm, activated, arrays_to_tensors
    from depthcli.splat.trainer import render_depth, train_splats

    train_splats(_cfg(small_scene, tmp_path / "j", steps=20, pose_opt=False))  # pose_opt moves the PLY (tested below)
    ck = torch.load(tmp_path / "j" / "checkpoints" / "step_000020.pt", weights_only=False)
    norm = SceneNorm.from_json(ck["norm"])
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in ck["params"].items()})
    frame = load_dataset(small_scene).frames[1]
    K = torch.tensor(frame.K, dtype=torch.float32)
    with torch.no_grad():
        vm_n = torch.tensor(norm.viewmat_to_norm(frame.cam_from_world), dtype=torch.float32)
        _, d_train, a_train, _ = render_depth(activated(params), vm_n, K, frame.width, frame.height, "ED", "torch")
        world = arrays_to_tensors(read_splats_ply(tmp_path / "j" / "splats.ply"))
        vm = torch.tensor(frame.cam_from_world, dtype=torch.float32)
        _, d_world, a_world, _ = render_depth(world, vm, K, frame.width, frame.height, "ED", "torch")
    assert (a_world > 0.5).float().mean() > 0.9
    np.testing.assert_allclose(a_world.numpy(), a_train.numpy(), atol=2e-3)
    ok = (a_world > 0.5).numpy()
    np.testing.assert_allclose(d_world.numpy()[ok], d_train.numpy()[ok] * norm.scale, rtol=2e-3)


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted_run(small_scene, tmp_path):
    """A real ``kill -9`` mid-run, then resume: the same parameters as a straight run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from depthcli.splat.trainer import train_splats

    kw = dict(steps=150, checkpoint_every=10, refine_start=5, refine_every=10, grow_grad2d=2e-4,
              max_init_points=300, max_gaussians=600, eval_every=0, progress=False)
    job = tmp_path / "killed"
    script = ("import json, sys; from depthcli.splat.trainer import SplatTrainConfig, train_splats; "
              "train_splats(SplatTrainConfig(sys.argv[1], sys.argv[2], **json.loads(sys.argv[3])))")
    proc = subprocess.Popen([sys.executable, "-c", script, str(small_scene), str(job), json.dumps(kw)])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((job / "checkpoints").glob("step_0000[2-9]0.pt")):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (job / "splats.ply").exists()
    from depthcli.splat.trainer import SplatTrainConfig

    b = train_splats(SplatTrainConfig(small_scene, job, resume=True, **kw))
    a = train_splats(SplatTrainConfig(small_scene, tmp_path / "straight", **kw))
    assert a["gaussians"] == b["gaussians"]
    assert (tmp_path / "straight" / "splats.ply").read_bytes() == (job / "splats.ply").read_bytes()


@pytest.mark.slow
def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    E = np.eye(4)
    E[[0, 0, 2, 2], [0, 2, 0, 2]] = [np.cos(a), np.sin(a), -np.sin(a), np.cos(a)]
    return E


def test_heldout_pose_alignment_finds_a_recorded_pose_error(tmp_path):
    """A held-out camera recorded 1 degree off: its raw AbsRel is poor, the pose-aligned one
    is less than half of it, and the correction found is ~1 degree; a correct pose stays put."""
    from depthcli.splat.trainer import train_splats

    ds = make_scene(tmp_path / "ds", pose_error={8: _rot_y(1.0)})
    s = train_splats(_cfg(ds, tmp_path / "job", steps=300, max_init_points=3000, max_gaussians=6000,
                          checkpoint_every=300, refine_start=100, refine_every=50))
    m = json.loads((tmp_path / "job" / "metrics.json").read_text())
    raw = {v["frame"]: v for v in m["heldout_per_view"]}
    aligned = {v["frame"]: v for v in m["heldout_pose_aligned_per_view"]}
    assert set(raw) == set(aligned) == {"f000", "f008"}
    print("raw", {k: round(v["abs_rel"], 4) for k, v in raw.items()},
          "aligned", {k: (round(v["abs_rel"], 4), round(v["rotation_deg"], 3)) for k, v in aligned.items()})
    assert raw["f008"]["abs_rel"] > 3 * raw["f000"]["abs_rel"]  # the recorded error shows in the raw metric
    assert aligned["f008"]["abs_rel"] < 0.5 * raw["f008"]["abs_rel"]  # ... and mostly gone after alignment
    assert aligned["f008"]["rotation_deg"] == pytest.approx(1.0, abs=0.2)
    assert aligned["f000"]["rotation_deg"] < 0.3  # a correct pose barely moves
    assert aligned["f000"]["abs_rel"] <= raw["f000"]["abs_rel"] + 1e-3
    assert s["heldout_pose_aligned"]["abs_rel"] < s["heldout"]["abs_rel"]
    # without the flag: no aligned figures
    s2 = train_splats(_cfg(ds, tmp_path / "job2", steps=20, checkpoint_every=20, heldout_pose_align=False))
    assert "heldout_pose_aligned" not in s2
    assert "heldout_pose_aligned_per_view" not in json.loads((tmp_path / "job2" / "metrics.json").read_text())


def test_pose_opt_outputs_and_the_ply_frame(small_scene, tmp_path):
    """--pose-opt: one correction per training frame and the common drift in metrics.json, held-out
    views placed by their neighbours (heldout) and also scored at the recorded poses; splats.ply
    rendered at the recorded poses gives exactly ``heldout_recorded_poses``. Auto is off for a
    dataset whose poses are exact (source kind not in POSE_OPT_SOURCES)."""
    from depthcli.io.dataset import load_dataset
    from depthcli.io.ply import read_splats_ply
    from depthcli.splat.model import arrays_to_tensors
    from depthcli.splat.trainer import depth_metrics, render_depth, train_splats

    s = train_splats(_cfg(small_scene, tmp_path / "opt", pose_opt=True, lr_pose=3e-3, heldout_pose_align=False))
    m = json.loads((tmp_path / "opt" / "metrics.json").read_text())
    ds = load_dataset(small_scene)
    assert s["pose_opt"] is True
    assert [c["frame"] for c in m["train_pose_corrections"]] == [f.name for i, f in enumerate(ds.frames) if i % 8]
    assert all(np.isfinite(c["rotation_deg"]) and np.isfinite(c["translation"]) for c in m["train_pose_corrections"])
    assert max(c["rotation_deg"] for c in m["train_pose_corrections"]) > 0  # the corrections did move
    assert set(m["pose_drift_removed"]) == {"rotation_deg", "translation"}
    placed = m["heldout_per_view"][0]
    assert placed["frame"] == "f000" and placed["placement_rotation_deg"] > 0
    world = arrays_to_tensors(read_splats_ply(tmp_path / "opt" / "splats.ply"))
    for rec in m["heldout_recorded_poses_per_view"]:
        f = next(f for f in ds.frames if f.name == rec["frame"])
        with torch.no_grad():
            _, d, a, _ = render_depth(world, torch.tensor(f.cam_from_world, dtype=torch.float32),
                                      torch.tensor(f.K, dtype=torch.float32), f.width, f.height, "ED", "cpu")
        mine = depth_metrics(d.numpy().astype(np.float64), ds.read_depth(f), a.numpy())
        assert mine["abs_rel"] == pytest.approx(rec["abs_rel"], rel=1e-3)
    auto = train_splats(_cfg(small_scene, tmp_path / "auto", steps=10, checkpoint_every=10))
    assert auto["pose_opt"] is False and "heldout_recorded_poses" not in auto
    assert "train_pose_corrections" not in json.loads((tmp_path / "auto" / "metrics.json").read_text())


@pytest.mark.slow
def test_pose_opt_on_7scenes_beats_the_recorded_poses(tmp_path):
    """Real SLAM poses (7-Scenes redkitchen, 160x120, 600 steps): auto turns --pose-opt on, and the
    held-out AbsRel (views placed by the refined trajectory, their depth unused) beats training at
    the recorded poses (measured: 0.0158 vs 0.0184)."""
    from conftest import shared_data

    from depthcli.convert import convert
    from depthcli.convert.config import ConvertConfig
    from depthcli.splat.trainer import SplatTrainConfig, train_splats

    src = shared_data("rgbd", "7scenes_redkitchen")
    convert(ConvertConfig(source=src, out=tmp_path / "k", downscale=4))
    kw = dict(steps=600, eval_every=0, checkpoint_every=600, progress=False, heldout_pose_align=False)
    on = train_splats(SplatTrainConfig(tmp_path / "k", tmp_path / "on", **kw))
    off = train_splats(SplatTrainConfig(tmp_path / "k", tmp_path / "off", pose_opt=False, **kw))
    print("pose-opt", on["heldout"], "recorded poses", on["heldout_recorded_poses"], "without", off["heldout"])
    assert on["pose_opt"] is True and off["pose_opt"] is False
    assert on["heldout"]["abs_rel"] < 0.95 * off["heldout"]["abs_rel"]
    assert on["heldout"]["coverage"] > 0.98


def test_common_motion_recovers_one_rigid_drift_and_neighbours():
    """Corrections that all amount to one world motion G give back G (and moving the splats by
    it equals each camera's own correction); held-out placement uses the adjacent training views."""
    from depthcli.splat.pose_align import common_motion, mean_motion, moved_splats, rigidly_moved, se3_exp, world_motion
    from depthcli.splat.trainer import neighbour_train_ids

    rng = np.random.default_rng(0)
    g = np.array([0.01, -0.02, 0.015, 0.03, -0.01, 0.02])
    G = se3_exp(torch.tensor(g)).numpy()

    def hat(w):
        return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])

    pairs = []
    for _ in range(6):
        V = se3_exp(torch.tensor(rng.normal(size=6) * 0.3)).numpy()
        R, t = V[:3, :3], V[:3, 3]
        xi = np.concatenate([R @ g[:3], hat(t) @ R @ g[:3] + R @ g[3:]])  # the adjoint: exp(xi^) V = V G
        np.testing.assert_allclose(world_motion(V, xi), G, atol=1e-9)
        pairs.append((V, xi))
    P = rng.normal(size=(200, 3))
    R, t = common_motion(P, pairs)
    np.testing.assert_allclose(R, G[:3, :3], atol=1e-9)
    np.testing.assert_allclose(t, G[:3, 3], atol=1e-9)
    np.testing.assert_allclose(mean_motion([G, G]), G, atol=1e-12)
    s = {"means": torch.tensor(P, dtype=torch.float32), "quats": torch.randn(200, 4)}
    a = rigidly_moved(s, R, t)
    b = moved_splats(s, torch.tensor(pairs[0][1], dtype=torch.float32), torch.tensor(pairs[0][0], dtype=torch.float32))
    assert torch.allclose(a["means"], b["means"], atol=1e-5) and torch.allclose(a["quats"], b["quats"], atol=1e-5)
    assert neighbour_train_ids(0, [1, 2, 3]) == [1]
    assert neighbour_train_ids(8, [1, 2, 7, 9, 10]) == [7, 9]
    assert neighbour_train_ids(16, [1, 15]) == [15]


def test_se3_exp_hand_values():
    """exp of a pure rotation twist = Rodrigues; of a pure translation twist = that translation."""
    from depthcli.splat.pose_align import se3_exp

    E = se3_exp(torch.tensor([0.0, np.radians(1.5), 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)).numpy()
    assert np.allclose(E, _rot_y(1.5), atol=1e-12)
    E = se3_exp(torch.tensor([0.0, 0.0, 0.0, 0.1, -0.2, 0.3], dtype=torch.float64)).numpy()
    assert np.allclose(E[:3, :3], np.eye(3)) and np.allclose(E[:3, 3], [0.1, -0.2, 0.3])


def test_moved_splats_seen_from_v_equal_the_splats_seen_from_the_corrected_camera():
    """Pose alignment moves the splats instead of the camera: W = V^-1 exp(xi) V applied to the
    Gaussians (means and orientations) renders exactly what exp(xi) V renders."""
    from depthcli.splat.pose_align import moved_splats, se3_exp
    from depthcli.splat.render import render

    g = torch.Generator().manual_seed(3)
    n = 300
    splats = {"means": torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.6 + torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64),
              "quats": torch.randn(n, 4, generator=g, dtype=torch.float64),
              "scales": torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.15 + 0.02,
              "opacities": torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05}
    V = torch.from_numpy(look_at((0.4, -0.3, -0.5), (0.0, 0.1, 3.0)))
    K = torch.tensor([[60.0, 0, 40], [0, 60.0, 30], [0, 0, 1]], dtype=torch.float64)
    xi = torch.tensor([0.02, -0.03, 0.015, 0.05, -0.02, 0.04], dtype=torch.float64)

    def depth(s, vm):
        out, alpha, _ = render(s["means"], s["quats"], s["scales"], s["opacities"], None, vm[None], K[None], 80, 60,
                               mode="ED", backend="torch")
        return out[0, ..., 0], alpha[0, ..., 0]

    d_ref, a_ref = depth(splats, se3_exp(xi) @ V)
    d_mov, a_mov = depth(moved_splats(splats, xi, V), V)
    assert float(a_ref.sum()) > 100  # the view sees the splats
    assert torch.allclose(d_mov, d_ref, atol=1e-9) and torch.allclose(a_mov, a_ref, atol=1e-9)
    d_not, _ = depth(splats, V)  # ... and the correction is not negligible
    assert float((d_not - d_ref).abs().max()) > 0.05
    # the splats kept for the alignment (near the view) render the view exactly as all of them do
    from depthcli.splat.pose_align import near_view

    far = {k: torch.cat([v, v]) for k, v in splats.items()}
    far["means"][n:] = far["means"][n:] * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64) + torch.tensor(
        [0.0, 0.0, -2.0], dtype=torch.float64)  # mirrored behind the camera
    far["means"][n: n + 50, 0] += 40.0  # and far off to the side
    keep = near_view(far, V, K, 80, 60)
    assert n - 10 <= int(keep.sum()) < 2 * n - 50
    d_all, a_all = depth(far, V)
    d_near, a_near = depth({k: v[keep] for k, v in far.items()}, V)
    assert torch.equal(d_all, d_near) and torch.equal(a_all, a_near)


def test_half_resolution_target_hand_values():
    """2x2 blocks: their mean where all four pixels are valid, else invalid (0); odd edges dropped."""
    from depthcli.splat.pose_align import _half_target

    t = np.array([[1.0, 3.0, 2.0, 2.0, 9.0],
                  [1.0, 3.0, 0.0, 2.0, 9.0],
                  [4.0, 4.0, 5.0, 6.0, 9.0]], dtype=np.float32)
    assert np.array_equal(_half_target(t), np.array([[2.0, 0.0]], dtype=np.float32))


def test_synthetic_ed_reaches_absrel_001_and_render_cli(scene, tmp_path, run_cli):
    """Acceptance: depth-only ED on the synthetic scene, CPU: held-out AbsRel <= 0.01."""
    code, out, err = run_cli("splat-train", scene, tmp_path / "job", "--mode", "ED", "--steps", "900",
                             "--eval-every", "300", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["heldout"]["abs_rel"] <= 0.01 and s["heldout"]["coverage"] >= 0.97
    assert s["train_frames"] == 14 and s["heldout_frames"] == 2
    job = tmp_path / "job"
    for name in ("splats.ply", "metrics.json", "curves.png", "job.json"):
        assert (job / name).is_file(), name
    m = json.loads((job / "metrics.json").read_text())
    assert [v["frame"] for v in m["heldout_per_view"]] == ["f000", "f008"]
    # render the PLY at the dataset's cameras: a depth dataset in the same units, close to the truth
    code, out, err = run_cli("render", job / "splats.ply", scene, tmp_path / "r", "--json")
    assert code == 0, err
    r = json.loads(out)
    from depthcli.io.dataset import load_dataset

    rd = load_dataset(tmp_path / "r")
    assert rd.depth_units == "m" and rd.source["kind"] == "render" and rd.source["mode"] == "ED"
    assert len(rd.frames) == 16 and not rd.has_images  # depth-only splats: no RGB
    assert r["vs_input_depth"]["abs_rel"] < 0.01
    # the held-out frame rendered from the PLY agrees with the trainer's held-out numbers
    gt = load_dataset(scene).read_depth(load_dataset(scene).frames[0])
    pred = rd.read_depth(rd.frames[0])
    both = (gt > 0) & (pred > 0)
    absrel = float(np.mean(np.abs(pred[both] - gt[both]) / gt[both]))
    assert absrel == pytest.approx(m["heldout_per_view"][0]["abs_rel"], rel=0.05, abs=1e-4)
    print("synthetic ED held-out:", s["heldout"], "render vs input:", r["vs_input_depth"])


@pytest.mark.slow
def test_rgb_ed_trains_and_renders_rgb_and_depth(scene, tmp_path, run_cli):
    code, out, err = run_cli("splat-train", scene, tmp_path / "job", "--mode", "RGB+ED", "--steps", "150", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["mode"] == "RGB+ED" and s["heldout"]["abs_rel"] < 0.05
    from depthcli.io.ply import read_splats_ply

    assert read_splats_ply(tmp_path / "job" / "splats.ply").has_colors
    code, out, err = run_cli("render", tmp_path / "job" / "splats.ply", scene, tmp_path / "r", "--json")
    assert code == 0, err
    from depthcli.io.dataset import load_dataset

    rd = load_dataset(tmp_path / "r")
    assert rd.has_images
    src = load_dataset(scene)
    img = rd.read_image(rd.frames[0]).astype(float)
    ref = src.read_image(src.frames[0]).astype(float)
    assert np.abs(img - ref).mean() < 25  # learnt colours, not grey (grey 128 is ~45 off)


# ----------------------------------------------------------------------------- bad input


def _write_raw(folder: Path, depth: np.ndarray, image_hw=None):
    """A dataset.json written by hand (for inputs DatasetWriter would sanitise)."""
    from depthcli.io.dataset import FORMAT

    (folder / "depth").mkdir(parents=True)
    np.save(folder / "depth" / "a.npy", depth.astype(np.float32))
    frame = {"name": "a", "depth": "depth/a.npy", "width": depth.shape[1], "height": depth.shape[0],
             "K": [[10, 0, 4], [0, 10, 3], [0, 0, 1]], "cam_from_world": np.eye(4).tolist()}
    if image_hw is not None:
        import cv2

        (folder / "images").mkdir()
        cv2.imwrite(str(folder / "images" / "a.png"), np.zeros((*image_hw, 3), np.uint8))
        frame["image"] = "images/a.png"
    (folder / "dataset.json").write_text(json.dumps(
        {"format": FORMAT, "version": 1, "depth_units": "m", "depth_kind": "z", "frames": [frame, dict(frame, name="b")]}))
    return folder


@pytest.mark.parametrize(
    "case,match",
    [
        ("no_valid", "no valid depth"),
        ("nan", "NaN"),
        ("image_size", "image of frame"),
    ],
)
def test_bad_dataset_is_one_clear_error(tmp_path, run_cli, case, match):
    depth = np.full((6, 8), 2.0)
    kw = {}
    if case == "no_valid":
        depth[:] = 0
    elif case == "nan":
        depth[1, 1] = np.nan
    else:
        kw["image_hw"] = (5, 8)
    ds = _write_raw(tmp_path / "ds", depth, **kw)
    mode = ["--mode", "RGB+ED"] if case == "image_size" else []
    code, out, err = run_cli("splat-train", ds, tmp_path / "job", *mode)
    assert code == 1 and match in err and "Traceback" not in err
    assert not (tmp_path / "job").exists()  # nothing half-written


def test_out_and_resume_rules(small_scene, tmp_path, run_cli):
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "keep.txt").write_text("x")
    code, _, err = run_cli("splat-train", small_scene, tmp_path / "exists", "--steps", "2")
    assert code == 1 and "already exists" in err
    code, _, err = run_cli("splat-train", small_scene, tmp_path / "exists", "--steps", "2", "--overwrite")
    assert code == 1 and "not a folder depthcli created" in err and (tmp_path / "exists" / "keep.txt").exists()
    code, _, err = run_cli("splat-train", small_scene, tmp_path / "none", "--resume")
    assert code == 1 and "no checkpoint" in err and not (tmp_path / "none").exists()
    code, _, err = run_cli("splat-train", small_scene, tmp_path / "x", "--mode", "RGB+ED")
    assert code == 1 and "needs images" in err and not (tmp_path / "x").exists()
    code, _, err = run_cli("splat-train", small_scene, tmp_path / "x", "--mode", "XYZ")
    assert code == 1 and "unknown mode" in err
    for flag, value, msg in (("--densify", "magic", "unknown densify"), ("--depth-loss", "l7", "unknown depth loss"),
                             ("--backend", "vulkan", "unknown"), ("--device", "cuda", "CUDA is not available")):
        if flag == "--device" and torch.cuda.is_available():
            continue
        code, _, err = run_cli("splat-train", small_scene, tmp_path / "x", flag, value)
        assert code == 1 and msg in err and not (tmp_path / "x").exists(), (flag, err)


def test_render_bad_ply_is_one_clear_error(small_scene, tmp_path, run_cli):
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nend_header\n")
    code, _, err = run_cli("render", tmp_path / "bad.ply", small_scene, tmp_path / "r")
    assert code == 1 and "error" in err and "Traceback" not in err and not (tmp_path / "r").exists()
    code, _, err = run_cli("render", tmp_path / "missing.ply", small_scene, tmp_path / "r")
    assert code == 1 and "does not exist" in err


# ----------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_sparse_colmap_sacre_coeur(tmp_path):
    """Sparse SfM depth supervises only its pixels; held-out sparse depths reproduced (AbsRel <= 0.1)."""
    from conftest import shared_data

    from depthcli.cli import main
    from depthcli.splat.trainer import train_splats

    src = shared_data("colmap", "sacre_coeur")
    if main(["convert", str(src), str(tmp_path / "ds"), "--downscale", "4"]) != 0:
        pytest.skip("depthcli convert could not read the COLMAP model")
    s = train_splats(_cfg(tmp_path / "ds", tmp_path / "job", steps=150, eval_every=0, refine_start=100,
                          refine_every=100, grow_grad2d=2e-4, max_init_points=5000, max_gaussians=20000))
    print("sacre_coeur held-out:", s["heldout"], "init", s["init"])
    assert s["init"]["dense"] is False
    assert s["heldout"]["abs_rel"] <= 0.1
