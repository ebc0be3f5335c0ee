"""convert refuses hostile and broken inputs cleanly (one line, exit != 0, no output, inputs untouched),
and keeps K and depth consistent where a real failed run was accepted before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from hostile import assert_refused  # noqa: E402


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


# --------------------------------------------------------------------------- TUM


def _tum(root: Path, rgb_entry: str = "rgb/1.000000.png", depth_entry: str = "depth/1.000000.png", gt: str = "1.000 0 0 0 0 0 0 1") -> Path:
    write_png(root / "rgb" / "1.000000.png", np.full((4, 6, 3), 90, np.uint8))
    write_png(root / "depth" / "1.000000.png", np.full((4, 6), 5000, np.uint16))
    (root / "rgb.txt").write_text(f"1.000000 {rgb_entry}\n")
    (root / "depth.txt").write_text(f"1.000000 {depth_entry}\n")
    (root / "groundtruth.txt").write_text(f"# timestamp tx ty tz qx qy qz qw\n{gt}\n")
    return root


@pytest.mark.parametrize("which", ["rgb", "depth"])
@pytest.mark.parametrize("style", ["dotdot", "absolute", "link"])
def test_tum_list_entries_cannot_leave_the_capture(tmp_path, run_cli, which, style):
    outside = tmp_path / "secret"
    if which == "rgb":
        write_png(outside / "x.png", np.full((4, 6, 3), 7, np.uint8))
    else:
        write_png(outside / "x.png", np.full((4, 6), 5000, np.uint16))
    root = tmp_path / "cap"
    if style == "dotdot":
        entry = "../secret/x.png"
    elif style == "absolute":
        entry = str(outside / "x.png")
    else:
        (root / "links").mkdir(parents=True)
        (root / "links" / "x.png").symlink_to(outside / "x.png")
        entry = "links/x.png"
    kw = {"rgb_entry": entry} if which == "rgb" else {"depth_entry": entry}
    _tum(root, **kw)
    out = tmp_path / "out"
    line = assert_refused(run_cli, ["convert", root, out, "--from", "tum"], inputs=[root, outside], absent=[out])
    assert f"{which}.txt entry" in line and ("outside" in line or "absolute" in line)


def test_tum_nan_translation_refused(tmp_path, run_cli):
    root = _tum(tmp_path / "cap", gt="1.000 nan 0 0 0 0 0 1")
    out = tmp_path / "out"
    line = assert_refused(run_cli, ["convert", root, out, "--from", "tum"], inputs=[root], absent=[out])
    assert "not finite" in line


def test_tum_nan_timestamp_refused(tmp_path, run_cli):
    root = _tum(tmp_path / "cap")
    (root / "rgb.txt").write_text("nan rgb/1.000000.png\n")
    out = tmp_path / "out"
    line = assert_refused(run_cli, ["convert", root, out, "--from", "tum"], inputs=[root], absent=[out])
    assert "rgb.txt:1" in line


def test_8bit_depth_refused(tmp_path, run_cli):
    root = tmp_path / "cap"
    write_png(root / "color" / "0001.png", np.full((4, 6, 3), 90, np.uint8))
    write_png(root / "depth" / "0001.png", np.full((4, 6), 200, np.uint8))
    out = tmp_path / "out"
    line = assert_refused(
        run_cli,
        ["convert", root, out, "--from", "folder", "--input-depth-scale", "1000", "--intrinsics", "5", "5", "3", "2"],
        inputs=[root],
        absent=[out],
    )
    assert "8-bit" in line


def test_kitti_fixed_K_is_said(tmp_path, run_cli):
    root = tmp_path / "kitti"
    write_png(root / "rgb" / "0000000005.png", np.full((4, 6, 3), 90, np.uint8))
    write_png(root / "depth" / "0000000005.png", np.full((4, 6), 2560, np.uint16))
    code, stdout, err = run_cli("convert", root, tmp_path / "out", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["detected"] == "kitti"
    assert "fixed" in summary["intrinsics"].lower() and "--intrinsics" in summary["intrinsics"]
    assert "--intrinsics" in err
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    # KITTI's published K (OpenCV integer pixel centres) + 0.5 for depthcli's convention
    np.testing.assert_allclose(meta["frames"][0]["K"], [[707.0493, 0, 604.5814], [0, 707.0493, 181.0066], [0, 0, 1]])
    # with --intrinsics no warning
    code, stdout, err = run_cli("convert", root, tmp_path / "out2", "--json", "--intrinsics", "700", "700", "3", "2")
    assert code == 0 and "fixed" not in json.loads(stdout)["intrinsics"].lower()


# --------------------------------------------------------------------------- COLMAP (text models by hand)


def _colmap(root: Path, camera: str = "1 PINHOLE 9 7 10 10 4.5 3.5", image_line: str = "1 1 0 0 0 0 0 0 1 im0.png",
            size: tuple[int, int] = (9, 7)) -> Path:
    """A one-image COLMAP text model (COLMAP doc/format.rst: cameras.txt, images.txt, points3D.txt)."""
    model = root / "sparse"
    model.mkdir(parents=True)
    (model / "cameras.txt").write_text(f"# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n{camera}\n")
    (model / "images.txt").write_text(f"# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n{image_line}\n\n")
    (model / "points3D.txt").write_text("# POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[]\n")
    write_png(root / "images" / "im0.png", np.full((size[1], size[0], 3), 90, np.uint8))
    return root


@pytest.mark.parametrize(
    "camera,word",
    [
        ("1 PINHOLE 9 7 nan 10 4.5 3.5", "invalid parameters"),
        ("1 PINHOLE 9 7 0 10 4.5 3.5", "focal length 0"),
        ("1 PINHOLE 9 7 10 -3 4.5 3.5", "focal length -3"),
        ("1 SIMPLE_RADIAL 9 7 -10 4.5 3.5 0", "focal length -10"),
    ],
)
def test_colmap_bad_focal_refused(tmp_path, run_cli, camera, word):
    root = _colmap(tmp_path / "proj", camera=camera)
    out = tmp_path / "out"
    line = assert_refused(run_cli, ["convert", root, out, "--from", "colmap"], inputs=[root], absent=[out])
    assert word in line


@pytest.mark.parametrize("image_line", ["1 nan 0 0 0 0 0 0 1 im0.png", "1 0 0 0 0 0 0 0 1 im0.png", "1 1 0 0 0 nan 0 0 1 im0.png"])
def test_colmap_bad_pose_refused(tmp_path, run_cli, image_line):
    root = _colmap(tmp_path / "proj", image_line=image_line)
    out = tmp_path / "out"
    line = assert_refused(run_cli, ["convert", root, out, "--from", "colmap"], inputs=[root], absent=[out])
    assert "pose" in line or "quaternion" in line or "not finite" in line


@pytest.mark.parametrize("style", ["dotdot", "absolute"])
def test_colmap_image_names_cannot_leave_the_image_folder(tmp_path, run_cli, style):
    outside = tmp_path / "secret"
    write_png(outside / "im0.png", np.full((7, 9, 3), 5, np.uint8))
    name = "../../secret/im0.png" if style == "dotdot" else str(outside / "im0.png")
    root = _colmap(tmp_path / "proj", image_line=f"1 1 0 0 0 0 0 0 1 {name}")
    out = tmp_path / "out"
    line = assert_refused(run_cli, ["convert", root, out, "--from", "colmap"], inputs=[root, outside], absent=[out])
    assert "COLMAP image 1 name" in line


def _dense(root: Path, depth: np.ndarray) -> None:
    from depthcli.io.colmap import write_colmap_dense_array

    maps = root / "stereo" / "depth_maps"
    maps.mkdir(parents=True)
    write_colmap_dense_array(maps / "im0.png.geometric.bin", depth)


def test_failed_dense_run_refused(tmp_path, run_cli):
    # the real case: 25x8 maps with values up to 1.7e38 for 645x239 cameras
    root = _colmap(tmp_path / "proj", camera="1 PINHOLE 645 239 500 500 322.5 119.5", size=(645, 239))
    d = np.full((8, 25), 1.7e38, np.float32)
    d[:, :5] = 2.0
    _dense(root, d)
    out = tmp_path / "out"
    line = assert_refused(run_cli, ["convert", root, out, "--from", "colmap", "--dense"], inputs=[root], absent=[out])
    assert "25x8" in line and "645x239" in line


def test_dense_absurd_values_refused(tmp_path, run_cli):
    root = _colmap(tmp_path / "proj")
    d = np.full((7, 9), 3.0, np.float32)
    d[2, 2] = 1.7e38
    _dense(root, d)
    out = tmp_path / "out"
    line = assert_refused(run_cli, ["convert", root, out, "--from", "colmap", "--dense"], inputs=[root], absent=[out])
    assert "failed" in line


def test_dense_shrunk_map_still_accepted(tmp_path, run_cli):
    # patch_match_stereo --max_image_size: same aspect, smaller map -> K follows the map
    root = _colmap(tmp_path / "proj", camera="1 PINHOLE 645 239 500 500 322.5 119.5", size=(645, 239))
    _dense(root, np.full((120, 323), 4.0, np.float32))
    code, _, err = run_cli("convert", root, tmp_path / "out", "--from", "colmap", "--dense")
    assert code == 0, err
    (fr,) = json.loads((tmp_path / "out" / "dataset.json").read_text())["frames"]
    assert (fr["width"], fr["height"]) == (323, 120)


def test_dense_downscale_odd_size_keeps_K_and_depth_consistent(tmp_path, run_cli):
    root = _colmap(tmp_path / "proj")  # 9x7 pinhole, fx = fy = 10, cx = 4.5, cy = 3.5
    rows, cols = np.mgrid[0:7, 0:9]
    d = (1.0 + rows * 10 + cols).astype(np.float32)  # each pixel's value names it
    _dense(root, d)
    code, _, err = run_cli("convert", root, tmp_path / "out", "--from", "colmap", "--dense", "--downscale", "2")
    assert code == 0, err
    (fr,) = json.loads((tmp_path / "out" / "dataset.json").read_text())["frames"]
    # crop to 8x6, then halve: stored pixel (c, r) covers source [2c, 2c+2) x [2r, 2r+2); K / 2 exactly
    assert (fr["width"], fr["height"]) == (4, 3)
    np.testing.assert_allclose(fr["K"], [[5, 0, 2.25], [0, 5, 1.75], [0, 0, 1]])
    got = np.load(tmp_path / "out" / fr["depth"])
    src_rows, src_cols = np.divmod(np.round(got - 1).astype(int), 10)
    # every stored sample comes from its own 2x2 block (not from a 9/4-scaled grid)
    assert np.all(src_rows // 2 == np.arange(3)[:, None]) and np.all(src_cols // 2 == np.arange(4)[None, :])
