"""BlendedMVS import on a fixture laid out as the dataset ships it (rendered_depth_maps/*.pfm,
cams/*_cam.txt in MVSNet's format, blended_images/*.jpg)."""

from __future__ import annotations

import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from hostile import assert_refused  # noqa: E402

CAM = """extrinsic
1 0 0 0.1
0 1 0 0.2
0 0 1 {tz}
0 0 0 1

intrinsic
{fx} 0 3.0
0 50 2.0
0 0 1

425.0 2.5
"""


def write_pfm_by_hand(path, a):
    # PFM: "Pf", "W H", negative scale = little endian, rows bottom to top
    a = np.asarray(a, "<f4")
    path.write_bytes(b"Pf\n%d %d\n-1.0\n" % (a.shape[1], a.shape[0]) + np.flipud(a).tobytes())


def make_scene(root, tz="0.3", fx="50"):
    for d in ("blended_images", "rendered_depth_maps", "cams"):
        (root / d).mkdir(parents=True)
    depth = np.arange(24, dtype=np.float32).reshape(4, 6) + 500.0
    depth[0, 0] = 0.0
    write_pfm_by_hand(root / "rendered_depth_maps" / "00000000.pfm", depth)
    (root / "cams" / "00000000_cam.txt").write_text(CAM.format(tz=tz, fx=fx))
    assert cv2.imwrite(str(root / "blended_images" / "00000000.jpg"), np.full((4, 6, 3), 100, np.uint8))
    return root, depth


def test_pfm_rows_and_cams(tmp_path, run_cli):
    src, depth = make_scene(tmp_path / "5a3ca9cb270f0e3f14d0eddb")
    out = tmp_path / "out"
    code, stdout, err = run_cli("convert", src, out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["detected"] == "blendedmvs"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["depth_units"] == "sfm"
    (fr,) = meta["frames"]
    np.testing.assert_array_equal(np.load(out / fr["depth"]), depth)  # top row first, as written
    np.testing.assert_allclose(fr["K"], [[50, 0, 3], [0, 50, 2], [0, 0, 1]])
    np.testing.assert_allclose(fr["cam_from_world"], [[1, 0, 0, 0.1], [0, 1, 0, 0.2], [0, 0, 1, 0.3], [0, 0, 0, 1]])


def test_bad_cams_refused(tmp_path, run_cli):
    src, _ = make_scene(tmp_path / "a", tz="nan")
    assert "non-finite" in assert_refused(run_cli, ["convert", src, tmp_path / "o", "--from", "blendedmvs"], inputs=[src], absent=[tmp_path / "o"])
    src, _ = make_scene(tmp_path / "b", fx="-50")
    assert "pinhole" in assert_refused(run_cli, ["convert", src, tmp_path / "o", "--from", "blendedmvs"], inputs=[src], absent=[tmp_path / "o"])
    src, _ = make_scene(tmp_path / "c")
    (src / "cams" / "00000000_cam.txt").unlink()
    assert "does not exist" in assert_refused(run_cli, ["convert", src, tmp_path / "o", "--from", "blendedmvs"], inputs=[src], absent=[tmp_path / "o"])
