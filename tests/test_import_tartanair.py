"""TartanAir import on a fixture laid out as tartanair_tools' data_type.md documents it
(depth_left/NNNNNN_left_depth.npy metres, pose_left.txt 'tx ty tz qx qy qz qw' NED camera-to-world)."""

from __future__ import annotations

import json

import numpy as np

from hostile import assert_refused


def make_traj(root, pose_line="1 2 3 0 0 0 1", depth=None):
    root.mkdir(parents=True)
    (root / "depth_left").mkdir()
    d = np.full((4, 6), 2.0, np.float32) if depth is None else depth
    np.save(root / "depth_left" / "000000_left_depth.npy", d)
    (root / "pose_left.txt").write_text(pose_line + "\n")
    return root


def test_metres_sky_and_ned_pose(tmp_path, run_cli):
    d = np.full((4, 6), 2.0, np.float32)
    d[0, 0] = 10000.0  # the sky sphere
    d[1, 1] = 40.0  # disparity 80 / 40 = 2 would be the trap: the file holds depth
    src = make_traj(tmp_path / "P000", depth=d)
    out = tmp_path / "out"
    code, stdout, err = run_cli("convert", src, out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["detected"] == "tartanair"
    meta = json.loads((out / "dataset.json").read_text())
    (fr,) = meta["frames"]
    z = np.load(out / fr["depth"])
    assert z[0, 0] == 0 and z[1, 1] == 40.0 and z[2, 2] == 2.0
    np.testing.assert_allclose(fr["K"], [[320, 0, 320], [0, 320, 240], [0, 0, 1]])
    # identity NED orientation at (1, 2, 3): the camera looks along world +x (NED forward),
    # its OpenCV x (right) is world +y, its y (down) is world +z.
    T = np.array(fr["cam_from_world"])
    np.testing.assert_allclose(T[:3, :3], [[0, 1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-12)
    # a world point 5 m ahead of the camera has z = 5 and projects to the principal point
    pc = T[:3, :3] @ np.array([6.0, 2.0, 3.0]) + T[:3, 3]
    np.testing.assert_allclose(pc, [0, 0, 5], atol=1e-12)


def test_nan_pose_refused(tmp_path, run_cli):
    src = make_traj(tmp_path / "P000", pose_line="nan 2 3 0 0 0 1")
    line = assert_refused(run_cli, ["convert", src, tmp_path / "out", "--from", "tartanair"], inputs=[src], absent=[tmp_path / "out"])
    assert "not finite" in line


def test_missing_pose_line_and_bad_depth(tmp_path, run_cli):
    src = make_traj(tmp_path / "a", pose_line="")
    line = assert_refused(run_cli, ["convert", src, tmp_path / "out", "--from", "tartanair"], inputs=[src], absent=[tmp_path / "out"])
    assert "pose_left.txt" in line
    src = make_traj(tmp_path / "b", depth=np.full((4, 6), 2, np.uint16))  # integers: unknown units
    line = assert_refused(run_cli, ["convert", src, tmp_path / "out", "--from", "tartanair"], inputs=[src], absent=[tmp_path / "out"])
    assert "metres" in line
