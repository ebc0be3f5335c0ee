"""Virtual KITTI 2 import, on a fixture laid out as vkitti_2.0.3 documents it
(frames/depth/Camera_N/depth_IIIII.png uint16 centimetres, 65535 = sky; intrinsic.txt, extrinsic.txt)."""

from __future__ import annotations

import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from hostile import assert_refused  # noqa: E402

INTR_HEADER = "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]\n"
EXTR_HEADER = "frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1\n"


def make_variation(root, depth=None, intr="725.0087 725.0087 3.5 2.5", extr="1 0 0 0.5 0 1 0 0 0 0 1 -2 0 0 0 1"):
    var = root / "Scene01" / "clone"
    d = var / "frames" / "depth" / "Camera_0"
    d.mkdir(parents=True)
    depth = np.array([[100, 250, 65535, 1000, 0, 12345, 7, 8]] * 6, np.uint16) if depth is None else depth
    assert cv2.imwrite(str(d / "depth_00000.png"), depth)
    rgb = var / "frames" / "rgb" / "Camera_0"
    rgb.mkdir(parents=True)
    assert cv2.imwrite(str(rgb / "rgb_00000.jpg"), np.full((depth.shape[0], depth.shape[1], 3), 80, np.uint8))
    (var / "intrinsic.txt").write_text(INTR_HEADER + f"0 0 {intr}\n")
    (var / "extrinsic.txt").write_text(EXTR_HEADER + f"0 0 {extr}\n")
    return var


def test_centimetres_sky_K_and_pose(tmp_path, run_cli):
    var = make_variation(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = run_cli("convert", var, out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["detected"] == "vkitti2"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["depth_units"] == "m" and meta["depth_kind"] == "z"
    assert "centimetres" in meta["source"]["depth_conversion"]
    (fr,) = meta["frames"]
    z = np.load(out / fr["depth"])
    # by hand: 100 cm = 1 m, 250 cm = 2.5 m, 65535 = sky -> 0, 1000 cm = 10 m, 0 -> 0, 12345 cm = 123.45 m
    np.testing.assert_allclose(z[0], [1.0, 2.5, 0.0, 10.0, 0.0, 123.45, 0.07, 0.08], rtol=1e-6)
    # published K (OpenCV pixel centres) + 0.5
    np.testing.assert_allclose(fr["K"], [[725.0087, 0, 4.0], [0, 725.0087, 3.0], [0, 0, 1]])
    np.testing.assert_allclose(fr["cam_from_world"], [[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, -2], [0, 0, 0, 1]])
    assert fr["image"] is not None


def test_missing_extrinsics(tmp_path, run_cli):
    var = make_variation(tmp_path)
    (var / "extrinsic.txt").unlink()
    out = tmp_path / "out"
    line = assert_refused(run_cli, ["convert", var, out, "--from", "vkitti2"], inputs=[var], absent=[out])
    assert "extrinsic.txt" in line


def test_nan_pose_and_bad_intrinsics(tmp_path, run_cli):
    var = make_variation(tmp_path / "a", extr="1 0 0 nan 0 1 0 0 0 0 1 -2 0 0 0 1")
    line = assert_refused(run_cli, ["convert", var, tmp_path / "out", "--from", "vkitti2"], inputs=[var], absent=[tmp_path / "out"])
    assert "not finite" in line
    var = make_variation(tmp_path / "b", intr="0 725 3.5 2.5")
    line = assert_refused(run_cli, ["convert", var, tmp_path / "out", "--from", "vkitti2"], inputs=[var], absent=[tmp_path / "out"])
    assert "focal" in line


def test_unknown_units_8bit_depth(tmp_path, run_cli):
    var = make_variation(tmp_path, depth=np.full((6, 8), 100, np.uint8))
    line = assert_refused(run_cli, ["convert", var, tmp_path / "out", "--from", "vkitti2"], inputs=[var], absent=[tmp_path / "out"])
    assert "16-bit" in line
