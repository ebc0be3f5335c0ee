"""Hypersim import: range -> z with the scene's off-centre pinhole; poses with the pinhole's tilt.

The real frame (../shared/data/range/hypersim_ai_037_002) is checked against
Hypersim's own definitions, computed here independently of depthcli: rays from
``M_cam_from_uv`` with (u, v) in [-1, 1] at pixel centres (v bottom to top),
OpenGL camera axes, keyframe orientation/position (asset units * metres scale).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import shared_data

h5py = pytest.importorskip("h5py")

SCENE_REL = ("range", "hypersim_ai_037_002", "contrib", "mikeroberts3000", "jupyter", "ai_037_002")
CSV_REL = ("range", "hypersim_ai_037_002", "contrib", "mikeroberts3000", "metadata_camera_parameters.csv")


def _h5(path):
    with h5py.File(path, "r") as fh:
        return np.asarray(fh["dataset"][()])


def _hypersim_world_points(rng, M, R_o, p_m):
    """World points (metres) of every pixel from Hypersim's own camera model."""
    h, w = rng.shape
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    u = (cols + 0.5) / w * 2.0 - 1.0
    v = 1.0 - (rows + 0.5) / h * 2.0
    uv1 = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3).astype(np.float64)
    rays = uv1 @ M.T
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    p_cam = rays * rng.reshape(-1, 1).astype(np.float64)
    return p_cam @ R_o.T + p_m, cols.ravel(), rows.ravel()


def test_real_hypersim_frame(tmp_path, run_cli):
    scene = shared_data(*SCENE_REL)
    csv_path = shared_data(*CSV_REL)
    out = tmp_path / "ds"
    code, stdout, err = run_cli("convert", scene, out, "--from", "hypersim", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert "range" in summary["depth_conversion"] and "z" in summary["depth_conversion"]

    meta = json.loads((out / "dataset.json").read_text())
    assert meta["depth_kind"] == "z" and meta["depth_units"] == "m"
    assert "range" in meta["source"]["depth_conversion"]
    (frame,) = meta["frames"]
    assert frame["image"] is None  # depth-only frame
    assert frame["name"] == "cam_00/0000" and frame["depth"] == "depth/cam_00_0000.npy"
    K = np.array(frame["K"])
    cam_from_world = np.array(frame["cam_from_world"])
    # The data README: fx = fy = 887.54, cx = 573.44, cy = 457.64 (far from the centre 512, 384)
    np.testing.assert_allclose([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], [887.54, 887.54, 573.44, 457.64], atol=0.006)
    assert K[0, 1] == 0 and abs(K[0, 2] - 512) > 50 and abs(K[1, 2] - 384) > 50
    z = np.load(out / frame["depth"])
    rng = _h5(scene / "images/scene_cam_00_geometry_hdf5/frame.0000.depth_meters.hdf5")
    assert z.shape == rng.shape == (768, 1024)

    # 1. Back-projecting every stored z with the stored K gives Hypersim's range (float16 precision).
    h, w = z.shape
    x = (np.arange(w) + 0.5 - K[0, 2]) / K[0, 0]
    y = (np.arange(h) + 0.5 - K[1, 2]) / K[1, 1]
    ray_len = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + 1.0)
    back = z.astype(np.float64) * ray_len
    ok = np.isfinite(rng)
    tol = np.spacing(np.abs(rng[ok]).astype(np.float16)).astype(np.float64)  # one float16 step
    assert np.all(np.abs(back[ok] - rng[ok].astype(np.float64)) <= tol)
    # README: along the pinhole's optical axis the centre pixel is 7.838 m (7.831 along Hypersim's camera z)
    assert z[384, 512] == pytest.approx(7.838, abs=0.0006)

    # 2. Hypersim's own world points project through the stored K and cam_from_world onto their
    #    pixel centres, at the stored z: checks K, the 0.53 deg tilt and the pose together.
    with open(csv_path, newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["scene_name"] == "ai_037_002")
    M = np.array([[float(row[f"M_cam_from_uv_{i}{j}"]) for j in range(3)] for i in range(3)])
    s = float(row["settings_units_info_meters_scale"])
    R_o = _h5(scene / "_detail/cam_00/camera_keyframe_orientations.hdf5")[0].astype(np.float64)
    p = _h5(scene / "_detail/cam_00/camera_keyframe_positions.hdf5")[0].astype(np.float64)
    pts, cols, rows = _hypersim_world_points(rng, M, R_o, s * p)
    pc = pts @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    u = K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2]
    v = K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2]
    assert np.abs(u - (cols + 0.5)).max() < 1e-3 and np.abs(v - (rows + 0.5)).max() < 1e-3
    np.testing.assert_allclose(pc[:, 2], z.ravel(), rtol=1e-6)
    # the tilt is in the pose: the stored camera's z axis is not Hypersim's (-z_gl) axis
    hyp_axis_cv = R_o @ np.array([0.0, 0.0, -1.0])
    stored_axis = cam_from_world[2, :3]
    angle = np.degrees(np.arccos(np.clip(hyp_axis_cv @ stored_axis, -1, 1)))
    assert angle == pytest.approx(0.53, abs=0.01)


# --------------------------------------------------------------------------- fixtures


def _make_scene(root, *, M=None, scale="0.01", orientation=None, position=None, with_csv=True, range_map=None):
    """A tiny Hypersim scene (6x4 pixels) laid out as the dataset does."""
    scene = root / "ai_001_001"
    gdir = scene / "images" / "scene_cam_00_geometry_hdf5"
    gdir.mkdir(parents=True)
    det = scene / "_detail" / "cam_00"
    det.mkdir(parents=True)
    rng = np.full((4, 6), 3.0, np.float16) if range_map is None else range_map
    with h5py.File(gdir / "frame.0000.depth_meters.hdf5", "w") as fh:
        fh["dataset"] = rng
    with h5py.File(det / "camera_keyframe_orientations.hdf5", "w") as fh:
        fh["dataset"] = (np.eye(3) if orientation is None else orientation)[None]
    with h5py.File(det / "camera_keyframe_positions.hdf5", "w") as fh:
        fh["dataset"] = (np.array([100.0, 0.0, 50.0]) if position is None else position)[None]
    if with_csv:
        # centred camera, 90 deg horizontal field of view: ray = (u, v * 4/6, -1)
        M = np.array([[1.0, 0, 0], [0, 4 / 6, 0], [0, 0, -1.0]]) if M is None else M
        row = {"scene_name": "ai_001_001", "settings_output_img_width": "6", "settings_output_img_height": "4",
               "settings_units_info_meters_scale": scale}
        row.update({f"M_cam_from_uv_{i}{j}": repr(float(M[i, j])) for i in range(3) for j in range(3)})
        with open(root / "metadata_camera_parameters.csv", "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=list(row))
            wr.writeheader()
            wr.writerow(row)
    return scene


def test_fixture_centred_camera_by_hand(tmp_path, run_cli):
    rng = np.array([[3, 3, 3, 3, 3, 3], [3, 3, 3, 3, 3, 3], [3, 3, 3, np.nan, 3, 3], [3, 3, 3, 3, 3, 3]], np.float16)
    scene = _make_scene(tmp_path, range_map=rng)
    out = tmp_path / "out"
    code, _, err = run_cli("convert", scene, out)  # auto-detected
    assert code == 0, err
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["source"]["kind"] == "hypersim"
    (frame,) = meta["frames"]
    K = np.array(frame["K"])
    # u = 2x/6 - 1 maps to the ray x / z = u: fx = 3, cx = 3; v = 1 - 2y/4 -> y_cv = v*4/6 ... fy = 3, cy = 2
    np.testing.assert_allclose(K, [[3, 0, 3], [0, 3, 2], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(np.array(frame["cam_from_world"]),
                               [[1, 0, 0, -1.0], [0, -1, 0, 0], [0, 0, -1, 0.5], [0, 0, 0, 1]], atol=1e-12)
    z = np.load(out / frame["depth"])
    # pixel (row 0, col 0): centre (0.5, 0.5) -> ray (-2.5/3, -1.5/3, 1): z = 3 / |ray|
    assert z[0, 0] == pytest.approx(3.0 / np.sqrt((2.5 / 3) ** 2 + (1.5 / 3) ** 2 + 1), rel=1e-6)
    assert z[2, 3] == 0.0  # NaN (no geometry) -> invalid


def test_downscale_keeps_K_and_z_consistent(tmp_path, run_cli):
    scene = _make_scene(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli("convert", scene, out, "--downscale", "2")
    assert code == 0, err
    (frame,) = json.loads((out / "dataset.json").read_text())["frames"]
    K = np.array(frame["K"])
    np.testing.assert_allclose(K, [[1.5, 0, 1.5], [0, 1.5, 1.0], [0, 0, 1]], atol=1e-12)
    z = np.load(out / frame["depth"])
    assert z.shape == (2, 3)


def _refused(run_cli, tmp_path, scene, *extra):
    before = {p: p.read_bytes() for p in scene.parent.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    code, stdout, err = run_cli("convert", scene, out, "--from", "hypersim", *extra)
    assert code != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    assert {p: p.read_bytes() for p in scene.parent.rglob("*") if p.is_file()} == before
    return err


def test_missing_camera_parameters(tmp_path, run_cli):
    scene = _make_scene(tmp_path, with_csv=False)
    err = _refused(run_cli, tmp_path, scene)
    assert "metadata_camera_parameters.csv" in err


def test_camera_parameters_flag(tmp_path, run_cli):
    scene = _make_scene(tmp_path / "a")
    (tmp_path / "a" / "metadata_camera_parameters.csv").rename(tmp_path / "cams.csv")
    code, _, err = run_cli("convert", scene, tmp_path / "out", "--camera-parameters", tmp_path / "cams.csv")
    assert code == 0, err


def test_unknown_units(tmp_path, run_cli):
    scene = _make_scene(tmp_path, scale="")
    assert "units" in _refused(run_cli, tmp_path, scene)


def test_nan_pose(tmp_path, run_cli):
    R = np.eye(3)
    R[0, 0] = np.nan
    scene = _make_scene(tmp_path, orientation=R)
    assert "not finite" in _refused(run_cli, tmp_path, scene)
    scene2 = _make_scene(tmp_path / "b", position=np.array([np.nan, 0, 0]))
    assert "not finite" in _refused(run_cli, tmp_path / "b", scene2)


def test_missing_keyframes(tmp_path, run_cli):
    scene = _make_scene(tmp_path)
    (scene / "_detail" / "cam_00" / "camera_keyframe_positions.hdf5").unlink()
    assert "does not exist" in _refused(run_cli, tmp_path, scene)


def test_nan_projection_matrix(tmp_path, run_cli):
    M = np.array([[1.0, 0, 0], [0, np.nan, 0], [0, 0, -1.0]])
    scene = _make_scene(tmp_path, M=M)
    assert "M_cam_from_uv" in _refused(run_cli, tmp_path, scene)


def test_frame_index_picks_its_keyframe(tmp_path, run_cli):
    scene = _make_scene(tmp_path)
    gdir = scene / "images" / "scene_cam_00_geometry_hdf5"
    with h5py.File(gdir / "frame.0002.depth_meters.hdf5", "w") as fh:
        fh["dataset"] = np.full((4, 6), 5.0, np.float16)
    det = scene / "_detail" / "cam_00"
    with h5py.File(det / "camera_keyframe_orientations.hdf5", "w") as fh:
        fh["dataset"] = np.stack([np.eye(3)] * 3)
    with h5py.File(det / "camera_keyframe_positions.hdf5", "w") as fh:
        fh["dataset"] = np.array([[0.0, 0, 0], [100.0, 0, 0], [200.0, 0, 0]])  # asset units (0.01 m)
    out = tmp_path / "out"
    code, _, err = run_cli("convert", scene, out)
    assert code == 0, err
    frames = json.loads((out / "dataset.json").read_text())["frames"]
    assert [f["name"] for f in frames] == ["cam_00/0000", "cam_00/0002"]
    # frame 2 uses keyframe 2: camera centre at x = 200 * 0.01 = 2 m -> t = -R c = (-2, 0, 0)
    np.testing.assert_allclose(np.array(frames[1]["cam_from_world"])[:3, 3], [-2.0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(np.array(frames[0]["cam_from_world"])[:3, 3], [0.0, 0, 0], atol=1e-12)
