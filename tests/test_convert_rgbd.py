"""RGB-D captures -> depth datasets (depthcli.io.rgbd through depthcli.convert).

Expected values come from hand computation or from the raw files read here
independently (NumPy / a hand-written PGM parser), never from the code under test.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from depthcli.convert import ConvertConfig, convert  # noqa: E402
from depthcli.errors import DepthcliError  # noqa: E402
from depthcli.io.dataset import load_dataset  # noqa: E402
from depthcli.convert.rgbd import detect  # noqa: E402
from depthcli.depth import downscale_depth_valid  # noqa: E402
from depthcli.io.rgbd import associate_timestamps, decode_depth  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SEVEN = DATA / "rgbd" / "7scenes_redkitchen"
FORMATS = DATA / "rgbd" / "formats"
NYU_GT = DATA / "depth_gt" / "nyu"
KITTI_GT = DATA / "depth_gt" / "kitti"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data {path.relative_to(DATA.parent.parent)} absent (../shared/data absent)")
    return path


def run(tmp_path: Path, source: Path, name: str = "out", **kw) -> tuple[dict, "object"]:
    out = tmp_path / name
    summary = convert(ConvertConfig(source=source, out=out, **kw))
    return summary, load_dataset(out)


def write_png16(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.asarray(array, dtype=np.uint16))


def write_rgb(path: Path, h: int, w: int, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w, 3), value, np.uint8)
    img[0, 0] = (255, 0, 0)
    assert cv2.imwrite(str(path), img)


# --------------------------------------------------------------------------- 7-Scenes (real)


def test_7scenes_redkitchen_real(tmp_path):
    src = need(SEVEN)
    summary, ds = run(tmp_path, src)  # auto-detected
    assert summary["detected"] == "7scenes"
    assert len(ds) == 50 and ds.depth_units == "m" and ds.depth_kind == "z"
    K_file = np.loadtxt(src / "camera-intrinsics.txt")
    saw_65535 = 0
    for frame in ds.frames:
        raw = cv2.imread(str(src / f"{frame.name}.depth.png"), cv2.IMREAD_UNCHANGED)
        saw_65535 += int((raw == 65535).sum())
        expected = raw.astype(np.float64) / 1000.0
        expected[(raw == 0) | (raw == 65535)] = 0.0
        got = ds.read_depth(frame)
        assert got.shape == (480, 640)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(frame.K, K_file + [[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])  # OpenCV -> +0.5 centres
        world_from_cam = np.loadtxt(src / f"{frame.name}.pose.txt")
        # the file's R is orthonormal to ~1e-4 only; the stored pose is exactly rigid
        np.testing.assert_allclose(frame.cam_from_world, np.linalg.inv(world_from_cam), atol=1e-3)
        R = frame.cam_from_world[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        img = ds.read_image(frame)
        assert img.shape == (480, 640, 3)
    assert saw_65535 > 0, "the fixture should exercise the 65535 invalid marker"


# --------------------------------------------------------------------------- single real frames in 3 encodings


def _pgm_u16_little_endian(path: Path) -> np.ndarray:
    """Independent PGM parser: the NYU raw values are the file's bytes read little-endian
    (= big-endian PGM value byte-swapped)."""
    data = path.read_bytes()
    m = re.match(rb"P5\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    w, h, maxval = (int(g) for g in m.groups())
    assert maxval > 255
    return np.frombuffer(data, dtype="<u2", count=w * h, offset=m.end()).reshape(h, w)


def _single_frame(tmp_path: Path, color: str, depth: str) -> Path:
    src = tmp_path / "cap"
    (src / "color").mkdir(parents=True)
    (src / "depth").mkdir()
    shutil.copyfile(FORMATS / color, src / "color" / f"000001{Path(color).suffix}")
    shutil.copyfile(FORMATS / depth, src / "depth" / f"000001{Path(depth).suffix}")
    return src


INTR = (525.0, 525.0, 319.5, 239.5)


def test_tum_single_frame_linear_5000(tmp_path):
    need(FORMATS)
    src = _single_frame(tmp_path, "TUM_color.png", "TUM_depth.png")
    _, ds = run(tmp_path, src, source_kind="folder", input_depth_scale=5000.0, intrinsics=INTR)
    raw = cv2.imread(str(FORMATS / "TUM_depth.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
    got = ds.read_depth(ds.frames[0])
    np.testing.assert_allclose(got, raw / 5000.0, rtol=1e-6)
    assert 0.5 < np.median(got[got > 0]) < 6.0


def test_nyu_raw_single_frame(tmp_path):
    need(FORMATS)
    src = _single_frame(tmp_path, "NYU_color.ppm", "NYU_depth.pgm")
    _, ds = run(tmp_path, src, source_kind="folder", depth_encoding="nyu-raw", intrinsics=INTR)
    raw = _pgm_u16_little_endian(FORMATS / "NYU_depth.pgm").astype(np.float64)
    expected = 351.3 / (1092.5 - raw)
    expected[~(expected > 0)] = 0.0  # raw >= 1092.5 (e.g. 2047 = no reading) decodes to no depth
    got = ds.read_depth(ds.frames[0])
    assert (expected == 0).mean() > 0.01  # the frame has invalid pixels
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert 1.0 < np.median(got[got > 0]) < 8.0
    assert ds.read_image(ds.frames[0]).shape == (480, 640, 3)


def test_sun_single_frame(tmp_path):
    need(FORMATS)
    src = _single_frame(tmp_path, "SUN_color.jpg", "SUN_depth.png")
    _, ds = run(tmp_path, src, source_kind="folder", depth_encoding="sun", intrinsics=INTR)
    d = cv2.imread(str(FORMATS / "SUN_depth.png"), cv2.IMREAD_UNCHANGED)
    expected = np.array([((int(v) >> 3) | (int(v) << 13)) & 0xFFFF for v in d.ravel()], dtype=np.float64)
    expected = expected.reshape(d.shape) / 1000.0
    got = ds.read_depth(ds.frames[0])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert 0.5 < np.median(got[got > 0]) < 8.0


def test_decode_depth_markers_by_hand():
    raw = np.array([[0, 1000, 65535, 2500]], np.uint16)
    np.testing.assert_allclose(decode_depth(raw, "linear", 1000.0), [[0, 1.0, 0, 2.5]])
    # nyu-raw: the value as read is byte-swapped first: 0x0304 -> 0x0403 = 1027
    nyu = np.array([[0x0304, 0xFF07]], np.uint16)  # 0xFF07 -> 0x07FF = 2047 (no reading)
    np.testing.assert_allclose(decode_depth(nyu, "nyu-raw"), [[351.3 / (1092.5 - 1027), 0.0]], rtol=1e-6)
    # sun: rotate right by 3 bits: 8000 = 1000 << 3 -> 1000 mm; 1 -> 1 << 13 = 8192 mm
    np.testing.assert_allclose(decode_depth(np.array([[8000, 1]], np.uint16), "sun"), [[1.0, 8.192]])
    with pytest.raises(DepthcliError):
        decode_depth(raw, "linear", None)


# --------------------------------------------------------------------------- TUM layout built here


def _build_tum(root: Path) -> None:
    root.mkdir(parents=True)
    h, w = 6, 8
    rgb = [1.000, 1.033, 1.066]
    depth = [1.004, 1.030, 1.100]  # 1.066 has no depth within 0.02 s (1.100 is 0.034 away)
    lines_rgb, lines_depth = ["# color images"], ["# depth maps"]
    for i, t in enumerate(rgb):
        write_rgb(root / "rgb" / f"{t:.6f}.png", h, w, 50 + i)
        lines_rgb.append(f"{t:.6f} rgb/{t:.6f}.png")
    for i, t in enumerate(depth):
        write_png16(root / "depth" / f"{t:.6f}.png", np.full((h, w), 5000 * (i + 1), np.uint16))
        lines_depth.append(f"{t:.6f} depth/{t:.6f}.png")
    (root / "rgb.txt").write_text("\n".join(lines_rgb) + "\n")
    (root / "depth.txt").write_text("\n".join(lines_depth) + "\n")
    s = np.sqrt(0.5)
    (root / "groundtruth.txt").write_text(
        "# timestamp tx ty tz qx qy qz qw\n"
        "0.990 9 9 9 0 0 0 1\n"
        f"1.001 1 2 3 0 0 {s} {s}\n"  # nearest to rgb 1.000: 90 deg about z
        "1.020 0 0 0 0 0 0 1\n"
        "1.040 0.5 0 0 1 0 0 0\n"  # nearest to rgb 1.033: 180 deg about x
    )


def test_tum_association_and_poses(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    _build_tum(root)
    assert detect(root)[0] == "tum"
    summary, ds = run(tmp_path, root)
    assert summary["detected"] == "tum"
    assert [f.extra["timestamp"] for f in ds.frames] == [1.000, 1.033]
    assert [f.extra["depth_timestamp"] for f in ds.frames] == [1.004, 1.030]
    np.testing.assert_allclose(ds.read_depth(ds.frames[0]), 1.0)  # 5000 / 5000
    np.testing.assert_allclose(ds.read_depth(ds.frames[1]), 2.0)
    # freiburg1 intrinsics from the folder name; published with OpenCV's integer pixel centres,
    # stored with depthcli's (+0.5): cx 318.6 -> 319.1, cy 255.3 -> 255.8
    np.testing.assert_allclose(ds.frames[0].K, [[517.3, 0, 319.1], [0, 516.5, 255.8], [0, 0, 1]])
    # world_from_cam = [Rz(90), (1,2,3)] -> cam_from_world = [Rz(-90), -Rz(-90) t] = [[0,1,0],[-1,0,0],[0,0,1]], (-2, 1, -3)
    expected0 = np.array([[0, 1, 0, -2], [-1, 0, 0, 1], [0, 0, 1, -3], [0, 0, 0, 1]], float)
    np.testing.assert_allclose(ds.frames[0].cam_from_world, expected0, atol=1e-9)
    # world_from_cam = [Rx(180), (0.5,0,0)] -> cam_from_world = [diag(1,-1,-1), (-0.5, 0, 0)]
    expected1 = np.array([[1, 0, 0, -0.5], [0, -1, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1]], float)
    np.testing.assert_allclose(ds.frames[1].cam_from_world, expected1, atol=1e-9)


def test_tum_without_groundtruth_and_intrinsics_override(tmp_path):
    root = tmp_path / "capture"
    _build_tum(root)
    (root / "groundtruth.txt").unlink()
    _, ds = run(tmp_path, root, source_kind="tum", intrinsics=(100.0, 110.0, 4.0, 3.0))
    assert len(ds) == 2
    np.testing.assert_allclose(ds.frames[1].cam_from_world, np.eye(4))
    np.testing.assert_allclose(ds.frames[1].K, [[100, 0, 4], [0, 110, 3], [0, 0, 1]])


def test_associate_is_greedy_by_difference():
    # 0.01 is closer to 0.008 than 0.0 is, so it wins; 0.0 then has nothing within 0.02 s.
    assert associate_timestamps([0.0, 0.01], [0.008]) == [(1, 0)]
    assert associate_timestamps([0.0, 1.0], [0.019, 1.021]) == [(0, 0)]
    assert associate_timestamps([], [1.0]) == []


# --------------------------------------------------------------------------- generic folder


def _build_folder(root: Path, depth_arrays: dict[str, np.ndarray], as_npy: bool = False, h=6, w=8) -> None:
    for stem, arr in depth_arrays.items():
        write_rgb(root / "color" / f"{stem}.jpg", h, w)
        if as_npy:
            (root / "depth").mkdir(parents=True, exist_ok=True)
            np.save(root / "depth" / f"{stem}.npy", arr.astype(np.float32))
        else:
            write_png16(root / "depth" / f"{stem}.png", arr)


@pytest.mark.parametrize("fmt,scale,tol", [("npy", None, 1e-6), ("png16", None, 1e-6), ("png16", 4000.0, 0.5 / 4000 + 1e-6)])
def test_round_trip_depth_formats(tmp_path, fmt, scale, tol):
    rng = np.random.default_rng(0)
    raw = rng.integers(200, 9000, size=(6, 8)).astype(np.uint16)
    raw[0, :3] = 0
    src = tmp_path / "cap"
    _build_folder(src, {"0001": raw})
    _, ds = run(tmp_path, src, source_kind="folder", input_depth_scale=1000.0, intrinsics=(10, 10, 4, 3), depth_format=fmt, depth_scale=scale)
    f = ds.frames[0]
    assert f.depth.endswith(".npy" if fmt == "npy" else ".png")
    got = ds.read_depth(f)
    np.testing.assert_allclose(got, raw / 1000.0, atol=tol, rtol=0)
    assert (got[0, :3] == 0).all() and (got[1:] > 0).all()


def test_folder_npy_is_metres_with_poses_and_numbered_pairing(tmp_path):
    src = tmp_path / "cap"
    depth = np.full((6, 8), 2.5, np.float32)
    depth[2, 3] = np.nan  # non-finite -> invalid
    write_rgb(src / "rgb" / "rgb_00007.png", 6, 8)
    (src / "depth").mkdir(parents=True)
    np.save(src / "depth" / "depth_00007.npy", depth)
    world_from_cam = np.array([[0, -1, 0, 1.0], [1, 0, 0, 2.0], [0, 0, 1, 3.0], [0, 0, 0, 1]])
    (src / "poses").mkdir()
    np.savetxt(src / "poses" / "rgb_00007.txt", world_from_cam)
    (src / "K.txt").write_text("10 0 4\n0 12 3\n0 0 1\n")
    _, ds = run(tmp_path, src, intrinsics_file=src / "K.txt")  # auto: rgb/ + depth/ -> folder
    f = ds.frames[0]
    got = ds.read_depth(f)
    assert got[2, 3] == 0 and np.allclose(np.delete(got.ravel(), 2 * 8 + 3), 2.5)
    np.testing.assert_allclose(f.cam_from_world[:3, :3], world_from_cam[:3, :3].T)
    np.testing.assert_allclose(f.cam_from_world[:3, 3], [-2.0, 1.0, -3.0])  # -R^T t by hand
    np.testing.assert_allclose(f.K, [[10, 0, 4], [0, 12, 3], [0, 0, 1]])


def test_folder_png_without_scale_is_refused(tmp_path):
    src = tmp_path / "cap"
    _build_folder(src, {"a": np.full((6, 8), 1000, np.uint16)})
    with pytest.raises(DepthcliError, match="input-depth-scale"):
        run(tmp_path, src, source_kind="folder", intrinsics=(10, 10, 4, 3))
    with pytest.raises(DepthcliError, match="intrinsics"):
        run(tmp_path, src, source_kind="folder", input_depth_scale=1000.0)
    assert not (tmp_path / "out").exists()


def test_wrong_depth_size_error_and_resize(tmp_path):
    src = tmp_path / "cap"
    write_rgb(src / "color" / "a.png", 6, 8)
    write_png16(src / "depth" / "a.png", np.array([[1000, 2000, 3000, 4000], [0, 0, 5000, 5000], [1, 2, 3, 4]], np.uint16))
    with pytest.raises(DepthcliError, match="resize-depth"):
        run(tmp_path, src, source_kind="folder", input_depth_scale=1000.0, intrinsics=(10, 10, 4, 3))
    assert not (tmp_path / "out").exists()
    _, ds = run(tmp_path, src, source_kind="folder", input_depth_scale=1000.0, intrinsics=(10, 10, 4, 3), resize_depth=True)
    got = ds.read_depth(ds.frames[0])
    assert got.shape == (6, 8)
    # nearest 2x upsampling: pixel (r, c) takes source (r // 2, c // 2)
    assert got[0, 0] == 1.0 and got[1, 7] == 4.0 and got[2, 0] == 0.0 and got[3, 5] == 5.0


def test_max_depth_and_max_frames(tmp_path):
    src = tmp_path / "cap"
    arr = np.array([[500, 1500, 2500, 3500]] * 2, np.uint16)
    _build_folder(src, {"a": arr, "b": arr, "c": arr}, h=2, w=4)
    _, ds = run(tmp_path, src, source_kind="folder", input_depth_scale=1000.0, intrinsics=(10, 10, 2, 1), max_depth=2.0, max_frames=2)
    assert [f.name for f in ds.frames] == ["a", "b"]
    np.testing.assert_allclose(ds.read_depth(ds.frames[0])[0], [0.5, 1.5, 0, 0])


# --------------------------------------------------------------------------- downscale


def test_downscale_depth_valid_by_hand():
    d = np.array(
        [
            [1, 2, 0, 0, 9],
            [3, 4, 0, 7, 9],
            [0, 0, 0, 0, 9],
            [0, 6, 0, 0, 9],
        ],
        np.float32,
    )
    # factor 2: the 4 pixels of a block are equally near its centre -> first valid in row-major order
    np.testing.assert_array_equal(downscale_depth_valid(d, 2), [[1, 7], [6, 0]])
    e = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    assert downscale_depth_valid(e, 3)[0, 0] == 5  # the centre pixel
    e[1, 1] = 0
    assert downscale_depth_valid(e, 3)[0, 0] == 2  # centre invalid -> nearest valid (row-major tie-break)


def test_downscale_convert_scales_K_and_keeps_values(tmp_path):
    src = tmp_path / "cap"
    arr = np.zeros((6, 8), np.uint16)
    arr[0::2, 0::2] = 2000  # only the top-left pixel of each 2x2 block is valid
    _build_folder(src, {"a": arr})
    _, ds = run(tmp_path, src, source_kind="folder", input_depth_scale=1000.0, intrinsics=(100, 120, 4, 3), downscale=2)
    f = ds.frames[0]
    assert (f.width, f.height) == (4, 3)
    np.testing.assert_allclose(f.K, [[50, 0, 2], [0, 60, 1.5], [0, 0, 1]])
    np.testing.assert_array_equal(ds.read_depth(f), np.full((3, 4), 2.0, np.float32))  # never averaged with 0
    assert ds.read_image(f).shape == (3, 4, 3)


# --------------------------------------------------------------------------- NYU / KITTI presets (real)


@pytest.mark.parametrize("root,kind,scale,fx", [(NYU_GT, "nyu", 1000.0, 518.8579), (KITTI_GT, "kitti", 256.0, 707.0493)])
def test_ground_truth_presets(tmp_path, root, kind, scale, fx):
    need(root)
    assert detect(root)[0] == kind
    _, ds = run(tmp_path, root, max_frames=1)
    f = ds.frames[0]
    depth_file = sorted((root / "depth").glob("*.png"))[0]
    raw = cv2.imread(str(depth_file), cv2.IMREAD_UNCHANGED).astype(np.float64)
    np.testing.assert_allclose(ds.read_depth(f), raw / scale, rtol=1e-6)
    assert f.K[0, 0] == pytest.approx(fx)
    assert ds.source["kind"] == kind and ds.source["raw_scale"] == scale


def test_7scenes_layout_built_here_defaults_and_bad_pose(tmp_path):
    root = tmp_path / "scene"
    seq = root / "seq-01"
    world_from_cam = np.array([[1, 0, 0, 0.1], [0, 0, -1, 0.2], [0, 1, 0, 0.3], [0, 0, 0, 1]], float)  # Rx(90)
    for i in range(3):
        stem = f"frame-{i:06d}"
        write_rgb(seq / f"{stem}.color.png", 4, 6)
        write_png16(seq / f"{stem}.depth.png", np.array([[0, 1234, 65535, 4000, 1, 2]] * 4, np.uint16))
        pose = world_from_cam if i != 1 else np.full((4, 4), -np.inf)  # 7-Scenes-style invalid pose
        np.savetxt(seq / f"{stem}.pose.txt", pose)
    assert detect(root)[0] == "7scenes"
    summary, ds = run(tmp_path, root)
    assert [f.name for f in ds.frames] == ["seq-01/frame-000000", "seq-01/frame-000002"]
    assert summary["skipped"] == {"no_pose": 1}
    np.testing.assert_allclose(ds.frames[0].K, [[585, 0, 320.5], [0, 585, 240.5], [0, 0, 1]])  # published 320, 240 + 0.5
    # inverse by hand: R^T = Rx(-90) = [[1,0,0],[0,0,1],[0,-1,0]], t' = -R^T t = (-0.1, -0.3, 0.2)
    expected = np.array([[1, 0, 0, -0.1], [0, 0, 1, -0.3], [0, -1, 0, 0.2], [0, 0, 0, 1]], float)
    np.testing.assert_allclose(ds.frames[1].cam_from_world, expected, atol=1e-12)
    np.testing.assert_allclose(ds.read_depth(ds.frames[0])[0], [0, 1.234, 0, 4.0, 0.001, 0.002], rtol=1e-6)


def _median_reprojection_error(ds, a, b, a_cam_from_world, b_cam_from_world) -> float:
    """Back-project frame a (z-depth, pixel centres at +0.5) into frame b; median |z - depth_b| in metres."""
    da, db = ds.read_depth(a), ds.read_depth(b)
    K = a.K
    r, c = np.nonzero(da > 0)
    z = da[r, c].astype(np.float64)
    pts_a = np.stack([(c + 0.5 - K[0, 2]) / K[0, 0] * z, (r + 0.5 - K[1, 2]) / K[1, 1] * z, z], axis=1)
    b_from_a = b_cam_from_world @ np.linalg.inv(a_cam_from_world)
    q = pts_a @ b_from_a[:3, :3].T + b_from_a[:3, 3]
    u = K[0, 0] * q[:, 0] / q[:, 2] + K[0, 2]
    v = K[1, 1] * q[:, 1] / q[:, 2] + K[1, 2]
    ok = (q[:, 2] > 0) & (u >= 0) & (u < db.shape[1]) & (v >= 0) & (v < db.shape[0])
    zb = db[np.floor(v[ok]).astype(int), np.floor(u[ok]).astype(int)]
    seen = zb > 0
    assert seen.sum() > 10000
    return float(np.median(np.abs(q[ok, 2][seen] - zb[seen])))


def test_7scenes_poses_reproject_real(tmp_path):
    """Frames 20 apart re-project onto each other (README: ~6 mm median depth error)."""
    src = need(SEVEN)
    _, ds = run(tmp_path, src, max_frames=2)
    a, b = ds.frames
    err = _median_reprojection_error(ds, a, b, a.cam_from_world, b.cam_from_world)
    assert err < 0.012, err
    # the opposite pose convention (storing camera-to-world) is clearly worse: the check can tell
    wrong = _median_reprojection_error(ds, a, b, np.linalg.inv(a.cam_from_world), np.linalg.inv(b.cam_from_world))
    assert wrong > 3 * err, (err, wrong)
