"""ScanNet-style import on a fixture laid out as ScanNet's SensReader exports
(color/N.jpg, depth/N.png uint16 mm, pose/N.txt camera-to-world with -inf for lost frames,
intrinsic/intrinsic_depth.txt 4x4)."""

from __future__ import annotations

import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from hostile import assert_refused  # noqa: E402


def make_scene(root, n=3, color_size=(12, 8), lost=(1,)):
    for d in ("color", "depth", "pose", "intrinsic"):
        (root / d).mkdir(parents=True)
    (root / "intrinsic" / "intrinsic_depth.txt").write_text("5 0 3 0\n0 5 2 0\n0 0 1 0\n0 0 0 1\n")
    for i in range(n):
        assert cv2.imwrite(str(root / "depth" / f"{i}.png"), np.full((4, 6), 1500 + i, np.uint16))
        assert cv2.imwrite(str(root / "color" / f"{i}.jpg"), np.full((color_size[1], color_size[0], 3), 90, np.uint8))
        T = np.eye(4)
        T[0, 3] = i
        np.savetxt(root / "pose" / f"{i}.txt", np.full((4, 4), -np.inf) if i in lost else T)
    return root


def test_millimetres_poses_lost_frames(tmp_path, run_cli):
    src = make_scene(tmp_path / "scene0000_00")
    out = tmp_path / "out"
    code, stdout, err = run_cli("convert", src, out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["detected"] == "scannet" and summary["skipped"] == {"invalid_pose": 1}
    assert summary["colour_resized_to_depth"] == 2
    meta = json.loads((out / "dataset.json").read_text())
    assert [f["name"] for f in meta["frames"]] == ["0", "2"]
    f2 = meta["frames"][1]
    assert np.allclose(np.load(out / f2["depth"]), 1.502)
    np.testing.assert_allclose(f2["K"], [[5, 0, 3], [0, 5, 2], [0, 0, 1]])
    np.testing.assert_allclose(np.array(f2["cam_from_world"])[0, 3], -2.0)  # inverse of camera-to-world


def test_missing_intrinsics_and_pose(tmp_path, run_cli):
    src = make_scene(tmp_path / "a")
    (src / "intrinsic" / "intrinsic_depth.txt").unlink()
    assert "intrinsic_depth.txt" in assert_refused(run_cli, ["convert", src, tmp_path / "o", "--from", "scannet"], inputs=[src], absent=[tmp_path / "o"])
    src = make_scene(tmp_path / "b")
    (src / "pose" / "2.txt").unlink()
    assert "pose/2.txt" in assert_refused(run_cli, ["convert", src, tmp_path / "o", "--from", "scannet"], inputs=[src], absent=[tmp_path / "o"])


def test_nan_pose_is_lost_and_8bit_depth_refused(tmp_path, run_cli):
    src = make_scene(tmp_path / "a", lost=(0, 1, 2))
    assert "has a valid pose" in assert_refused(run_cli, ["convert", src, tmp_path / "o", "--from", "scannet"], inputs=[src], absent=[tmp_path / "o"])
    src = make_scene(tmp_path / "b")
    assert cv2.imwrite(str(src / "depth" / "0.png"), np.full((4, 6), 15, np.uint8))
    assert "8-bit" in assert_refused(run_cli, ["convert", src, tmp_path / "o", "--from", "scannet"], inputs=[src], absent=[tmp_path / "o"])
