"""synth: determinism, exact depth, and the COLMAP / 7-Scenes exports."""

import hashlib

import numpy as np
import pytest

from depthcli.io.dataset import load_dataset
from depthcli.synth.generate import SynthConfig, look_at, synthesize
from depthcli.synth.scene import Light, Material, Quad, Scene, load_scene


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def synth_small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "scene"
    synthesize(SynthConfig(out=out, frames=6, width=48, height=36, seed=3, colmap=True, colmap_camera="OPENCV", colmap_points=400, rgbd=True))
    return out


def test_deterministic_for_a_seed(tmp_path, synth_small):
    again = tmp_path / "again"
    synthesize(SynthConfig(out=again, frames=6, width=48, height=36, seed=3, colmap=True, colmap_camera="OPENCV", colmap_points=400, rgbd=True))
    assert _digest(again) == _digest(synth_small)
    other = tmp_path / "other"
    synthesize(SynthConfig(out=other, frames=6, width=48, height=36, seed=4))
    a = load_dataset(synth_small)
    b = load_dataset(other)
    assert not np.array_equal(a.read_depth(a.frames[0]), b.read_depth(b.frames[0]))


def test_plane_depth_is_exact_z_depth():
    """One slanted plane: the rendered z-depth equals the ray-plane intersection by hand."""
    n = np.array([0.0, 0.3, 1.0]) / np.linalg.norm([0.0, 0.3, 1.0])
    u = np.array([1.0, 0.0, 0.0])
    v = np.cross(n, u)
    scene = Scene([Quad(center=(0.0, 0.0, 4.0), axis_u=tuple(u), axis_v=tuple(v), half_u=100.0, half_v=100.0, material=Material())],
                  light=Light(shadows=False))
    K = np.array([[30.0, 0, 16.0], [0, 30.0, 12.0], [0, 0, 1]])
    pose = np.eye(4)  # camera at the origin looking down +z
    _, depth = scene.render(K, pose, 32, 24)
    rows, cols = np.mgrid[0:24, 0:32]
    x = (cols + 0.5 - 16.0) / 30.0
    y = (rows + 0.5 - 12.0) / 30.0
    # Ray (x, y, 1) * t meets n . X = n . c  ->  t = (n . c) / (n . (x, y, 1)); t is the z-depth.
    t = (n @ np.array([0.0, 0.0, 4.0])) / (n[0] * x + n[1] * y + n[2])
    np.testing.assert_allclose(depth, t, rtol=1e-6)
    # Not the ray length: off-centre pixels differ from it.
    ray = t * np.sqrt(x * x + y * y + 1)
    assert np.abs(depth - ray).max() > 0.01


def test_dataset_depth_matches_scene_at_pixel_centres(synth_small):
    ds = load_dataset(synth_small)
    scene = load_scene(synth_small)
    f = ds.frames[2]
    depth = ds.read_depth(f)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, f.height, 50)
    cols = rng.integers(0, f.width, 50)
    z = scene.depth_at(f.K, f.cam_from_world, np.stack([cols + 0.5, rows + 0.5], 1))
    np.testing.assert_allclose(depth[rows, cols], z, rtol=1e-6)
    assert ds.depth_units == "m" and ds.source["kind"] == "synth"


def test_look_at_axes():
    T = look_at(np.array([0.0, 0.0, 1.0]), np.array([5.0, 0.0, 1.0]))
    # Looking along world +x with z up: camera z = world +x, camera y (down) = world -z.
    np.testing.assert_allclose(T[2, :3], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(T[1, :3], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(T[0, :3], [0, -1, 0], atol=1e-12)


def _parse_colmap_text(sparse):
    cams = {}
    for line in (sparse / "cameras.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            p = line.split()
            cams[int(p[0])] = (p[1], int(p[2]), int(p[3]), [float(x) for x in p[4:]])
    images = {}
    lines = [l for l in (sparse / "images.txt").read_text().splitlines() if not l.startswith("#")]
    for head, pts in zip(lines[0::2], lines[1::2]):
        h = head.split()
        vals = [float(x) for x in pts.split()]
        obs = [(vals[i], vals[i + 1], int(vals[i + 2])) for i in range(0, len(vals), 3)]
        images[int(h[0])] = dict(q=[float(x) for x in h[1:5]], t=[float(x) for x in h[5:8]], cam=int(h[8]), name=h[9], obs=obs)
    points = {}
    for line in (sparse / "points3D.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            p = line.split()
            track = [(int(p[i]), int(p[i + 1])) for i in range(8, len(p), 2)]
            points[int(p[0])] = (np.array([float(x) for x in p[1:4]]), track)
    return cams, images, points


def _quat_to_R(q):
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def test_colmap_export_observations_are_distorted_projections(synth_small):
    import cv2

    cams, images, points = _parse_colmap_text(synth_small / "colmap" / "sparse" / "0")
    model, w, h, params = cams[1]
    assert model == "OPENCV" and (w, h) == (48, 36)
    fx, fy, cx, cy, k1, k2, p1, p2 = params
    Kcv = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    ds = load_dataset(synth_small)
    n_obs = 0
    for image_id, im in images.items():
        R = _quat_to_R(im["q"])
        frame = ds.frame(im["name"].rsplit(".", 1)[0])
        np.testing.assert_allclose(R, frame.cam_from_world[:3, :3], atol=1e-12)
        np.testing.assert_allclose(im["t"], frame.cam_from_world[:3, 3], atol=1e-12)
        for idx, (x, y, pid) in enumerate(im["obs"]):
            if pid < 0:
                continue
            xyz, track = points[pid]
            assert (image_id, idx) in track
            rvec, _ = cv2.Rodrigues(R)
            proj, _ = cv2.projectPoints(xyz[None], rvec, np.array(im["t"]), Kcv, np.array([k1, k2, p1, p2]))
            np.testing.assert_allclose([x, y], proj[0, 0], atol=1e-6)
            n_obs += 1
    assert n_obs > 100
    # Every track entry points back at an observation of that point.
    for pid, (_, track) in points.items():
        assert len(track) >= 2
        for image_id, idx in track:
            assert images[image_id]["obs"][idx][2] == pid


def test_7scenes_export(synth_small):
    import cv2

    ds = load_dataset(synth_small)
    for f in ds.frames[:3]:
        png = cv2.imread(str(synth_small / "rgbd" / f"{f.name}.depth.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16
        np.testing.assert_allclose(png / 1000.0, ds.read_depth(f), atol=0.0005 + 1e-6)
        pose = np.loadtxt(synth_small / "rgbd" / f"{f.name}.pose.txt")
        np.testing.assert_allclose(pose @ f.cam_from_world, np.eye(4), atol=1e-12)
    K = np.loadtxt(synth_small / "rgbd" / "camera-intrinsics.txt")
    np.testing.assert_allclose(K, ds.frames[0].K)


def test_outdoor_has_far_content_and_sky(tmp_path):
    synthesize(SynthConfig(out=tmp_path / "o", frames=2, width=64, height=48, seed=1, style="outdoor"))
    ds = load_dataset(tmp_path / "o")
    d = np.concatenate([ds.read_depth(f).ravel() for f in ds.frames])
    assert (d == 0).any(), "sky pixels are invalid (0)"
    assert d.max() > 80.0, "outdoor scenes reach beyond the 80 m training cut-off"


def test_cli_refuses_existing_output(tmp_path, run_cli):
    code, _, err = run_cli("synth", tmp_path / "s", "--frames", "1", "--width", "16", "--height", "12")
    assert code == 0
    before = _digest(tmp_path / "s")
    code, _, err = run_cli("synth", tmp_path / "s", "--frames", "1", "--width", "16", "--height", "12", "--seed", "5")
    assert code == 1 and "already exists" in err and "Traceback" not in err
    assert _digest(tmp_path / "s") == before
    code, _, err = run_cli("synth", tmp_path / "t", "--style", "lunar")
    assert code == 1 and "unknown style" in err and not (tmp_path / "t").exists()


def test_several_scenes_layout(tmp_path):
    synthesize(SynthConfig(out=tmp_path / "m", scenes=2, frames=1, width=16, height=12, style="mixed"))
    styles = sorted(load_dataset(tmp_path / "m" / f"scene_{i:03d}").source["style"] for i in range(2))
    assert styles == ["indoor", "outdoor"]
