"""``depthcli convert`` from COLMAP models (depthcli.io.colmap).

Reference values come from (a) real COLMAP models in ../shared/data/colmap, read
independently here (text parsed by hand, binary through pycolmap), and (b) small
models built in tmp_path with pycolmap from known 3D points, whose distorted
keypoints and images are computed here with plain numpy / OpenCV formulas.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_data

cv2 = pytest.importorskip("cv2")  # before pycolmap: see depthcli.io.colmap.import_pycolmap
pycolmap = pytest.importorskip("pycolmap")

W, H = 160, 120
FX, FY, CX, CY = 130.0, 128.0, 80.0, 60.0
OPENCV_DIST = (-0.12, 0.03, 0.002, -0.0015)  # k1 k2 p1 p2


# --------------------------------------------------------------------------- helpers


def load_json_dataset(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def frame_arrays(root: Path, fr: dict):
    K = np.array(fr["K"], dtype=np.float64)
    T = np.array(fr["cam_from_world"], dtype=np.float64)
    depth = np.load(root / fr["depth"])
    pts = np.load(root / fr["sparse_points"])
    return K, T, depth, pts


def project_np(xyz: np.ndarray, K: np.ndarray, T: np.ndarray):
    pc = xyz @ T[:3, :3].T + T[:3, 3]
    z = pc[:, 2]
    u = K[0, 0] * pc[:, 0] / z + K[0, 2]
    v = K[1, 1] * pc[:, 1] / z + K[1, 2]
    return np.stack([u, v], 1), z


def quat_to_R(qw, qx, qy, qz):
    """Hamilton quaternion -> rotation matrix (COLMAP's convention)."""
    n = np.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
    qw, qx, qy, qz = qw / n, qx / n, qy / n, qz / n
    return np.array(
        [
            [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
            [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
            [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)],
        ]
    )


def check_projection(root: Path, points_of_image: dict, xyz_of: dict, min_stored=0.95, pose_of=None, pose_atol=1e-9):
    """Acceptance check 1: each track point of each frame lands on a pixel holding its
    z (1e-4 relative) or a nearer one; >= min_stored of them are stored exactly."""
    meta = load_json_dataset(root)
    assert meta["depth_units"] == "sfm" and meta["depth_kind"] == "z"
    total = stored = 0
    for fr in meta["frames"]:
        K, T, depth, _ = frame_arrays(root, fr)
        assert depth.shape == (fr["height"], fr["width"])
        if pose_of is not None:
            np.testing.assert_allclose(T, pose_of[fr["name"]], rtol=0, atol=pose_atol)
        ids = sorted(points_of_image[fr["name"]])
        assert ids, fr["name"]
        xyz = np.array([xyz_of[i] for i in ids])
        uv, z = project_np(xyz, K, T)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < fr["width"]) & (uv[:, 1] >= 0) & (uv[:, 1] < fr["height"])
        assert inside.mean() > 0.9, fr["name"]
        cols = np.floor(uv[inside, 0]).astype(int)
        rows = np.floor(uv[inside, 1]).astype(int)
        d = depth[rows, cols].astype(np.float64)
        zi = z[inside]
        exact = np.abs(d - zi) <= 1e-4 * zi
        nearer = (d > 0) & (d < zi)
        assert np.all(exact | nearer), f"{fr['name']}: {(~(exact | nearer)).sum()} points lost"
        total += len(zi)
        stored += int(exact.sum())
        # nothing else in the depth map: every valid pixel is one of these points
        assert (depth > 0).sum() <= len(zi)
    assert stored / total >= min_stored, (stored, total)
    return stored, total


def opencv_distort(xn: np.ndarray, yn: np.ndarray, dist=OPENCV_DIST):
    k1, k2, p1, p2 = dist
    r2 = xn * xn + yn * yn
    radial = 1 + k1 * r2 + k2 * r2 * r2
    xd = xn * radial + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn)
    yd = yn * radial + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn
    return xd, yd


def undistort_np(xd: np.ndarray, yd: np.ndarray, dist=OPENCV_DIST):
    """Invert :func:`opencv_distort` by fixed-point iteration (checked to 1e-12)."""
    k1, k2, p1, p2 = dist
    xn, yn = xd.copy(), yd.copy()
    for _ in range(100):
        r2 = xn * xn + yn * yn
        radial = 1 + k1 * r2 + k2 * r2 * r2
        xn = (xd - 2 * p1 * xn * yn - p2 * (r2 + 2 * xn * xn)) / radial
        yn = (yd - p1 * (r2 + 2 * yn * yn) - 2 * p2 * xn * yn) / radial
    rx, ry = opencv_distort(xn, yn, dist)
    assert np.abs(rx - xd).max() < 1e-12 and np.abs(ry - yd).max() < 1e-12
    return xn, yn


def texture(xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
    """A smooth function of the undistorted normalised ray: the 'scene' of synthetic images."""
    return 127.5 + 100.0 * np.sin(10.0 * xn + 0.3) * np.cos(8.0 * yn - 0.2)


def look_pose(i: int) -> np.ndarray:
    """cam_from_world of camera i: centres spread along x, slight yaw towards the points."""
    yaw = 0.08 * (i - 1)
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    centre = np.array([0.4 * (i - 1), 0.05 * i, 0.0])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ centre
    return T


def build_model(
    root: Path,
    model: str = "PINHOLE",
    fmt: str = "bin",
    classic: bool = False,
    n_images: int = 3,
    n_points: int = 150,
    seed: int = 0,
) -> dict:
    """A COLMAP project root/{images, sparse/0} with known points; returns the truth."""
    rng = np.random.default_rng(seed)
    xyz = np.column_stack([rng.uniform(-1.4, 1.4, n_points), rng.uniform(-0.9, 0.9, n_points), rng.uniform(3.0, 6.0, n_points)])
    # a few points exactly behind others on rays of camera 1 to exercise "nearest wins"
    centre1 = -look_pose(1)[:3, :3].T @ look_pose(1)[:3, 3]
    xyz[:5] = centre1 + (xyz[5:10] - centre1) * 1.3
    dist = OPENCV_DIST if model == "OPENCV" else (0.0, 0.0, 0.0, 0.0)
    params = [FX, FY, CX, CY, *dist] if model == "OPENCV" else [FX, FY, CX, CY]
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model=model, width=W, height=H, params=params, camera_id=1))
    (root / "images").mkdir(parents=True)
    poses, observed = {}, {}
    for i in range(n_images):
        T = look_pose(i)
        pc = xyz @ T[:3, :3].T + T[:3, 3]
        xd, yd = opencv_distort(pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2], dist)
        kp = np.column_stack([FX * xd + CX, FY * yd + CY])
        ok = (kp[:, 0] >= 1) & (kp[:, 0] < W - 1) & (kp[:, 1] >= 1) & (kp[:, 1] < H - 1)
        ids = np.nonzero(ok)[0]
        name = f"im{i}.png"
        image = pycolmap.Image(name=name, keypoints=kp[ids], camera_id=1, image_id=i + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(T[:3, :4]))
        poses[name] = T
        observed[i + 1] = {int(j): k for k, j in enumerate(ids)}
        # the image: texture of the undistorted ray through each (distorted) pixel centre
        u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
        xn, yn = undistort_np((u - CX) / FX, (v - CY) / FY, dist)
        val = texture(xn, yn)
        rgb = np.stack([val, 255 - val, np.full_like(val, 90)], -1)
        cv2.imwrite(str(root / "images" / name), np.clip(np.round(rgb), 0, 255).astype(np.uint8)[:, :, ::-1])
    point_ids, xyz_of, track_len = {}, {}, {}
    points_of_image = {f"im{i}.png": [] for i in range(n_images)}
    for j in range(n_points):
        tr = pycolmap.Track()
        for iid, obs in observed.items():
            if j in obs and (j % 4 != 0 or iid <= 2):  # every 4th point: a 2-image track
                tr.add_element(iid, obs[j])
        if tr.length() < 2:
            continue
        pid = rec.add_point3D(xyz[j], tr)
        rec.points3D[pid].error = 0.1 + 0.01 * (j % 50)  # 0.1 .. 0.59 px
        point_ids[j] = pid
        for e in tr.elements:
            points_of_image[f"im{e.image_id - 1}.png"].append(pid)
        xyz_of[pid] = xyz[j]
        track_len[pid] = tr.length()
    model_dir = root / "sparse" / "0"
    model_dir.mkdir(parents=True)
    if fmt == "bin":
        rec.write_binary(str(model_dir))
    else:
        rec.write_text(str(model_dir))
    if classic:
        for n in ("rigs", "frames"):
            (model_dir / f"{n}.{fmt}").unlink()
    errors = {pid: 0.1 + 0.01 * (j % 50) for j, pid in point_ids.items()}
    return {
        "xyz_of": xyz_of,
        "poses": poses,
        "points_of_image": points_of_image,
        "track_len": track_len,
        "errors": errors,
        "keypoint_of": {  # (image name, point id) -> distorted keypoint
            (f"im{iid - 1}.png", point_ids[j]): rec.images[iid].points2D[k].xy
            for iid, obs in observed.items()
            for j, k in obs.items()
            if j in point_ids and point_ids[j] in points_of_image[f"im{iid - 1}.png"]
        },
        "model_dir": model_dir,
    }


def convert_ok(run_cli, src: Path, out: Path, *flags: str) -> dict:
    code, stdout, stderr = run_cli("convert", src, out, "--json", *flags)
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["detected"] == "colmap"
    return summary


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_pycolmap_then_png_write_does_not_crash(tmp_path):
    """Loading pycolmap the depthcli way, then writing PNGs with OpenCV, must not abort
    (pycolmap-first load order crashes cv2.imwrite with these wheels)."""
    import subprocess
    import sys

    code = (
        "from depthcli.io.colmap import import_pycolmap\n"
        "import_pycolmap()\n"
        "import cv2, numpy as np\n"
        "for i in range(5):\n"
        f"    assert cv2.imwrite(r'{tmp_path}/a.png', (np.random.rand(200, 300, 3) * 255).astype(np.uint8))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


# --------------------------------------------------------------------------- detection


def test_detect_layouts(tmp_path):
    from depthcli.io.colmap import detect

    build_model(tmp_path / "proj", n_points=30)
    assert "project" in detect(tmp_path / "proj")
    assert "model folder" in detect(tmp_path / "proj" / "sparse" / "0")
    assert detect(tmp_path / "proj" / "images") is None
    assert detect(tmp_path / "nothing") is None


# --------------------------------------------------------------------------- real data


def test_sacre_coeur_binary_rigs_frames(tmp_path, run_cli):
    src = shared_data("colmap", "sacre_coeur")
    out = tmp_path / "ds"
    summary = convert_ok(run_cli, src, out)
    meta = load_json_dataset(out)
    assert meta["source"]["model_format"] == "bin" and meta["source"]["layout"] == "rigs+frames"
    rec = pycolmap.Reconstruction(str(src / "sparse" / "0"))
    names = sorted(im.name for im in rec.images.values())
    assert [f["name"] for f in meta["frames"]] == names and len(names) == 10
    points_of_image = {im.name: [] for im in rec.images.values()}
    for pid, p in rec.points3D.items():
        for e in p.track.elements:
            points_of_image[rec.images[e.image_id].name].append(pid)
    xyz_of = {pid: np.array(p.xyz) for pid, p in rec.points3D.items()}
    poses = {}
    for im in rec.images.values():
        T = np.eye(4)
        T[:3] = im.cam_from_world().matrix()
        poses[im.name] = T
    points_of_image = {k: set(v) for k, v in points_of_image.items()}
    stored, total = check_projection(out, points_of_image, xyz_of, pose_of=poses)
    assert summary["points_kept"] >= stored

    # K and undistortion agree with COLMAP's camera model: the observed (distorted)
    # keypoint, unprojected through the original SIMPLE_RADIAL camera and projected
    # with the stored pinhole K, is where the 3D point projects (SfM error ~0.33 px).
    by_name = {im.name: im for im in rec.images.values()}
    residuals = []
    for fr in meta["frames"]:
        K, T, _, pts = frame_arrays(out, fr)
        im = by_name[fr["name"]]
        cam = rec.cameras[im.camera_id]
        assert cam.model.name == "SIMPLE_RADIAL"
        kps = np.array([p2.xy for p2 in im.points2D if p2.has_point3D()])
        pids = [p2.point3D_id for p2 in im.points2D if p2.has_point3D()]
        xn = cam.cam_from_img(kps)
        uv_kp = np.column_stack([K[0, 0] * xn[:, 0] + K[0, 2], K[1, 1] * xn[:, 1] + K[1, 2]])
        uv_pt, _ = project_np(np.array([xyz_of[i] for i in pids]), K, T)
        residuals.append(np.linalg.norm(uv_kp - uv_pt, axis=1))
        # stored sparse points: (u, v, z, id) agree with our own projection
        uv_s, z_s = project_np(np.array([xyz_of[int(i)] for i in pts[:, 3]]), K, T)
        np.testing.assert_allclose(pts[:, :2], uv_s, atol=1e-6)
        np.testing.assert_allclose(pts[:, 2], z_s, rtol=1e-9)
        img = cv2.imread(str(out / fr["image"]))
        assert img.shape[:2] == (fr["height"], fr["width"])
    assert np.median(np.concatenate(residuals)) < 1.0

    # the stored images equal COLMAP's own undistortion (pycolmap.undistort_image)
    for fr in meta["frames"][:2]:
        im = by_name[fr["name"]]
        raw = cv2.imread(str(src / "images" / im.name), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)[:, :, ::-1]
        bitmap, ucam = pycolmap.undistort_image(
            pycolmap.UndistortCameraOptions(), pycolmap.Bitmap.from_array(np.ascontiguousarray(raw)), rec.cameras[im.camera_id]
        )
        np.testing.assert_allclose(
            fr["K"], [[ucam.params[0], 0, ucam.params[2]], [0, ucam.params[1], ucam.params[3]], [0, 0, 1]]
        )
        ours = cv2.imread(str(out / fr["image"]))[:, :, ::-1].astype(np.float64)
        assert ours.shape == bitmap.to_array().shape
        assert np.abs(ours - bitmap.to_array())[4:-4, 4:-4].mean() < 0.1


def _parse_text_model(model: Path):
    lines = [ln for ln in (model / "images.txt").read_text().splitlines() if not ln.startswith("#")]
    poses, ids = {}, {}
    for head in lines[0::2]:
        f = head.split()
        T = np.eye(4)
        T[:3, :3] = quat_to_R(*map(float, f[1:5]))
        T[:3, 3] = [float(x) for x in f[5:8]]
        poses[f[9]] = T
        ids[int(f[0])] = f[9]
    cam = (model / "cameras.txt").read_text().splitlines()[-1].split()
    assert cam[1] == "SIMPLE_PINHOLE"
    f, cx, cy = map(float, cam[4:7])
    xyz_of, points_of_image = {}, {n: set() for n in poses}
    for ln in (model / "points3D.txt").read_text().splitlines():
        if ln.startswith("#") or not ln.strip():
            continue
        v = ln.split()
        pid = int(v[0])
        xyz_of[pid] = np.array([float(x) for x in v[1:4]])
        for iid in v[8::2]:
            points_of_image[ids[int(iid)]].add(pid)
    return poses, (f, cx, cy, int(cam[2]), int(cam[3])), xyz_of, points_of_image


def test_maupertuis_text_classic(tmp_path, run_cli):
    src = shared_data("colmap", "maupertuis")
    out = tmp_path / "ds"
    convert_ok(run_cli, src, out)
    meta = load_json_dataset(out)
    assert meta["source"]["model_format"] == "txt" and meta["source"]["layout"] == "classic"
    poses, (f, cx, cy, w, h), xyz_of, points_of_image = _parse_text_model(src / "sparse" / "0")
    for fr in meta["frames"]:
        np.testing.assert_allclose(fr["K"], [[f, 0, cx], [0, f, cy], [0, 0, 1]], rtol=1e-12)
        assert (fr["width"], fr["height"]) == (w, h)
        # pinhole camera: the stored image is the original, pixel for pixel
        orig = cv2.imread(str(src / "images" / fr["name"]), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        assert np.array_equal(cv2.imread(str(out / fr["image"])), orig)
    # images.txt holds 6-digit, not exactly unit quaternions: COLMAP's normalisation
    # differs from ours by ~1e-7, far below the file's own precision.
    check_projection(out, points_of_image, xyz_of, pose_of=poses, pose_atol=1e-6)


# --------------------------------------------------------------------------- synthetic exact truth


@pytest.mark.parametrize("model,fmt,classic", [("PINHOLE", "bin", False), ("OPENCV", "bin", True), ("OPENCV", "txt", False)])
def test_synthetic_models_exact(tmp_path, run_cli, model, fmt, classic):
    truth = build_model(tmp_path / "proj", model=model, fmt=fmt, classic=classic)
    out = tmp_path / "ds"
    summary = convert_ok(run_cli, tmp_path / "proj", out)
    meta = load_json_dataset(out)
    assert meta["source"]["layout"] == ("classic" if classic else "rigs+frames")
    assert meta["source"]["model_format"] == fmt
    check_projection(out, truth["points_of_image"], truth["xyz_of"], min_stored=0.95, pose_of=truth["poses"])
    n_kept = 0
    for fr in meta["frames"]:
        K, T, depth, pts = frame_arrays(out, fr)
        assert fr["sparse_points"] == fr["depth"][:-4] + ".points.npy"
        assert pts.dtype == np.float64 and pts.shape[1] == 4
        n_kept += len(pts)
        # exact z of the known point, through the known pose
        xyz = np.array([truth["xyz_of"][int(i)] for i in pts[:, 3]])
        pc = xyz @ truth["poses"][fr["name"]][:3, :3].T + truth["poses"][fr["name"]][:3, 3]
        np.testing.assert_allclose(pts[:, 2], pc[:, 2], rtol=1e-9)
        d = depth[np.floor(pts[:, 1]).astype(int), np.floor(pts[:, 0]).astype(int)]
        assert np.all((np.abs(d - pts[:, 2]) <= 1e-4 * pts[:, 2]) | ((d > 0) & (d < pts[:, 2])))
        # u, v through the stored pinhole K, pushed through the ORIGINAL camera model
        # (OpenCV formula written here), land on the observed keypoint.
        xd, yd = opencv_distort((pts[:, 0] - K[0, 2]) / K[0, 0], (pts[:, 1] - K[1, 2]) / K[1, 1],
                                OPENCV_DIST if model == "OPENCV" else (0, 0, 0, 0))
        kp = np.array([truth["keypoint_of"][(fr["name"], int(i))] for i in pts[:, 3]])
        np.testing.assert_allclose(np.column_stack([FX * xd + CX, FY * yd + CY]), kp, atol=1e-6)
        # the undistorted image shows the same scene: texture of the ray through each pixel centre
        img = cv2.imread(str(out / fr["image"]))[:, :, ::-1].astype(np.float64)
        u, v = np.meshgrid(np.arange(fr["width"]) + 0.5, np.arange(fr["height"]) + 0.5)
        xn, yn = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
        xd, yd = opencv_distort(xn, yn, OPENCV_DIST if model == "OPENCV" else (0, 0, 0, 0))
        su, sv = FX * xd + CX, FY * yd + CY
        inner = (su > 1.5) & (su < W - 1.5) & (sv > 1.5) & (sv < H - 1.5)
        assert inner.mean() > 0.8
        err = np.abs(img[:, :, 0] - texture(xn, yn))[inner]
        assert err.mean() < 1.0, err.mean()
    assert summary["points_kept"] == n_kept
    if model == "OPENCV":
        K0 = np.array(meta["frames"][0]["K"])
        assert (meta["frames"][0]["width"], meta["frames"][0]["height"]) != (W, H) or not np.allclose(K0[0, 0], FX)


def _synth_or_skip():
    """(SynthConfig, synthesize, load_scene) of `depthcli synth`, or skip while it is being written."""
    import importlib

    found = {}
    for mod in ("depthcli.synth", "depthcli.synth.generate", "depthcli.synth.scene"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        for name in ("SynthConfig", "synthesize", "load_scene"):
            if name not in found and hasattr(m, name):
                found[name] = getattr(m, name)
    if len(found) < 3:
        pytest.skip("depthcli.synth has no SynthConfig/synthesize/load_scene yet")
    return found["SynthConfig"], found["synthesize"], found["load_scene"]


@pytest.mark.parametrize("camera", ["PINHOLE", "SIMPLE_RADIAL", "OPENCV"])
def test_synth_colmap_exact_depth(tmp_path, run_cli, camera):
    """Against `depthcli synth`'s analytic scene: every stored sparse point's z equals
    the exact ray-cast z at its (u, v) through the stored K and pose."""
    SynthConfig, synthesize, load_scene = _synth_or_skip()
    syn = tmp_path / "syn"
    synthesize(SynthConfig(out=syn, frames=3, width=W, height=H, seed=0, colmap=True, colmap_camera=camera))
    out = tmp_path / "ds"
    convert_ok(run_cli, syn / "colmap", out)
    scene = load_scene(syn)
    meta = load_json_dataset(out)
    assert len(meta["frames"]) == 3
    n = 0
    for fr in meta["frames"]:
        K, T, depth, pts = frame_arrays(out, fr)
        assert len(pts) > 0
        z_true = np.asarray(scene.depth_at(K, T, pts[:, :2]), dtype=np.float64)
        np.testing.assert_allclose(pts[:, 2], z_true, rtol=1e-4)
        d = depth[np.floor(pts[:, 1]).astype(int), np.floor(pts[:, 0]).astype(int)]
        assert np.all((np.abs(d - pts[:, 2]) <= 1e-4 * pts[:, 2]) | ((d > 0) & (d < pts[:, 2])))
        n += len(pts)
        # the undistorted image is the scene seen through the stored pinhole K: compare with a
        # direct render (interpolation blurs texture; a half-pixel error would double the gap)
        rgb, _ = scene.render(K, T, fr["width"], fr["height"])
        ref = np.asarray(rgb, dtype=np.float64)
        ours = cv2.imread(str(out / fr["image"]))[:, :, ::-1].astype(np.float64)
        gap = np.abs(ours - ref)[4:-4, 4:-4].mean()
        shifted = np.abs(np.roll(ours, 1, axis=1) - ref)[4:-4, 4:-4].mean()
        assert gap < 0.6 * shifted, (gap, shifted)
        if camera == "PINHOLE":
            assert gap < 0.1 * shifted  # same pixels: only PNG round-trip
    assert n > 50


PERSPECTIVE_MODELS = [m for m in pycolmap.CameraModelId.__members__ if m not in ("INVALID", "EQUIRECTANGULAR")]


@pytest.mark.parametrize("model", PERSPECTIVE_MODELS)
def test_every_perspective_camera_model(tmp_path, run_cli, model):
    """Stored (u, v) through the stored pinhole K, mapped by COLMAP's own camera model,
    land on the observed keypoint; z is the known point's z (all COLMAP models)."""
    cam = pycolmap.Camera.create_from_model_name(1, model, 70.0, W, H)
    params = np.array(cam.params, dtype=np.float64)
    for i in cam.extra_params_idxs():  # mild, non-zero distortion where the model has some
        params[i] = 0.02 if model != "EUCM" else params[i]
    cam.params = params
    rng = np.random.default_rng(1)
    xyz = np.column_stack([rng.uniform(-1, 1, 60), rng.uniform(-0.7, 0.7, 60), rng.uniform(3, 5, 60)])
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(cam)
    proj = tmp_path / "proj"
    (proj / "images").mkdir(parents=True)
    obs = {}
    for i in range(2):
        T = look_pose(i)
        kp = cam.img_from_cam(xyz @ T[:3, :3].T + T[:3, 3])
        ok = np.isfinite(kp).all(1) & (kp[:, 0] > 0) & (kp[:, 0] < W) & (kp[:, 1] > 0) & (kp[:, 1] < H)
        ids = np.nonzero(ok)[0]
        rec.add_image_with_trivial_frame(
            pycolmap.Image(name=f"im{i}.png", keypoints=kp[ids], camera_id=1, image_id=i + 1), pycolmap.Rigid3d(T[:3, :4])
        )
        obs[i + 1] = {int(j): k for k, j in enumerate(ids)}
        cv2.imwrite(str(proj / "images" / f"im{i}.png"), np.full((H, W, 3), 100, np.uint8))
    for j in range(len(xyz)):
        tr = pycolmap.Track()
        for iid in obs:
            if j in obs[iid]:
                tr.add_element(iid, obs[iid][j])
        if tr.length() == 2:
            rec.add_point3D(xyz[j], tr)
    (proj / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(proj / "sparse" / "0"))
    out = tmp_path / "ds"
    summary = convert_ok(run_cli, proj, out)
    assert summary["points_kept"] > 20
    for fr in load_json_dataset(out)["frames"]:
        K, T, _, pts = frame_arrays(out, fr)
        assert fr["colmap"]["camera_model"] == model
        img = cv2.imread(str(out / fr["image"]))
        assert img.shape[:2] == (fr["height"], fr["width"])
        assert np.all(img[fr["height"] // 2 - 2 : fr["height"] // 2 + 2, fr["width"] // 2 - 2 : fr["width"] // 2 + 2] == 100)
        iid = fr["colmap"]["image_id"]
        image = rec.images[iid]
        rays = np.column_stack([(pts[:, 0] - K[0, 2]) / K[0, 0], (pts[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(pts))])
        kp_ref = np.array([image.points2D[k].xy for k in (
            next(k for k, p2 in enumerate(image.points2D) if p2.has_point3D() and p2.point3D_id == int(pid))
            for pid in pts[:, 3])])
        np.testing.assert_allclose(cam.img_from_cam(rays), kp_ref, atol=1e-5)
        pc = np.array([rec.points3D[int(pid)].xyz for pid in pts[:, 3]]) @ T[:3, :3].T + T[:3, 3]
        np.testing.assert_allclose(pts[:, 2], pc[:, 2], rtol=1e-9)


def test_filters_and_max_depth(tmp_path, run_cli):
    truth = build_model(tmp_path / "proj", n_images=4, n_points=200, seed=3)
    out = tmp_path / "ds"
    summary = convert_ok(run_cli, tmp_path / "proj", out, "--max-reproj-error", "0.35",
                         "--min-track-length", "3", "--max-depth", "5.0")
    meta = load_json_dataset(out)
    assert meta["source"]["filters"] == {"max_reproj_error": 0.35, "min_track_length": 3, "max_depth": 5.0}
    total_kept = 0
    for fr in meta["frames"]:
        K, T, depth, pts = frame_arrays(out, fr)
        expected = set()
        for pid in truth["points_of_image"][fr["name"]]:
            uv, z = project_np(truth["xyz_of"][pid][None], K, T)
            inside = 0 <= uv[0, 0] < fr["width"] and 0 <= uv[0, 1] < fr["height"]
            if truth["errors"][pid] <= 0.35 and truth["track_len"][pid] >= 3 and z[0] <= 5.0 and inside:
                expected.add(pid)
        assert set(pts[:, 3].astype(int).tolist()) == expected
        assert depth.max() <= 5.0
        total_kept += len(expected)
    assert 0 < total_kept == summary["points_kept"]
    assert summary["point_counts"]["filtered_reproj_error"] > 0
    assert summary["point_counts"]["filtered_track_length"] > 0
    assert summary["point_counts"]["beyond_max_depth"] > 0


def test_downscale_scales_K_and_points(tmp_path, run_cli):
    build_model(tmp_path / "proj", n_points=80)
    full, half = tmp_path / "full", tmp_path / "half"
    convert_ok(run_cli, tmp_path / "proj", full)
    convert_ok(run_cli, tmp_path / "proj", half, "--downscale", "2", "--previews")
    mf, mh = load_json_dataset(full), load_json_dataset(half)
    for ff, fh in zip(mf["frames"], mh["frames"]):
        assert (fh["width"], fh["height"]) == (W // 2, H // 2)
        # 2x smaller, corner-aligned: f and c halve
        np.testing.assert_allclose(fh["K"], [[FX / 2, 0, CX / 2], [0, FY / 2, CY / 2], [0, 0, 1]])
        _, _, dh, ph = frame_arrays(half, fh)
        _, _, _, pf = frame_arrays(full, ff)
        np.testing.assert_allclose(ph[:, :2], pf[:, :2] / 2, atol=1e-9)
        np.testing.assert_allclose(ph[:, 2:], pf[:, 2:])
        assert cv2.imread(str(half / fh["image"])).shape[:2] == (H // 2, W // 2)
    assert (half / "previews").is_dir()


def test_dense_depth_maps(tmp_path, run_cli):
    # COLMAP dense workspace: images/, sparse/ (pinhole), stereo/depth_maps
    truth = build_model(tmp_path / "proj", fmt="txt", n_points=40)
    ws = tmp_path / "proj"
    (ws / "sparse" / "0").rename(ws / "sparse0")
    (ws / "sparse").rmdir()
    (ws / "sparse0").rename(ws / "sparse")
    maps = ws / "stereo" / "depth_maps"
    maps.mkdir(parents=True)
    rows, cols = np.mgrid[0:H, 0:W]
    expected = {}
    for i, name in enumerate(sorted(truth["poses"])):
        d = (2.0 + 0.01 * rows + 0.001 * cols + i).astype("<f4")
        d[0, :3] = -1.0  # COLMAP leaves unknown pixels <= 0
        # header "width&height&channels&" then row-major float32 (COLMAP doc/format.rst)
        (maps / f"{name}.geometric.bin").write_bytes(f"{W}&{H}&1&".encode() + d.tobytes(order="C"))
        (maps / f"{name}.photometric.bin").write_bytes(f"{W}&{H}&1&".encode() + (d * 0 + 99).tobytes())
        expected[name] = np.where(d > 0, d, 0)
    out = tmp_path / "ds"
    summary = convert_ok(run_cli, ws, out, "--dense")
    assert "geometric" in summary["depth_source"]
    for fr in load_json_dataset(out)["frames"]:
        np.testing.assert_array_equal(np.load(out / fr["depth"]), expected[fr["name"]])
    # downscale 2 keeps exact samples (no mixing)
    out2 = tmp_path / "ds2"
    convert_ok(run_cli, ws, out2, "--dense", "--downscale", "2")
    fr = load_json_dataset(out2)["frames"][0]
    d2 = np.load(out2 / fr["depth"])
    assert d2.shape == (H // 2, W // 2)
    assert np.isin(d2[d2 > 0], expected[fr["name"]]).all()
    # photometric maps are the fallback when no geometric ones exist
    for f in maps.glob("*.geometric.bin"):
        f.rename(tmp_path / f.name)
    out3 = tmp_path / "ds3"
    assert "photometric" in convert_ok(run_cli, ws, out3, "--dense")["depth_source"]
    assert np.all(np.load(out3 / load_json_dataset(out3)["frames"][0]["depth"]) == 99)
    # a truncated map, then a missing one: clear errors, nothing written
    victim = maps / "im1.png.photometric.bin"
    victim.write_bytes(victim.read_bytes()[:100])
    code, _, stderr = run_cli("convert", ws, tmp_path / "bad", "--dense")
    assert code == 1 and "truncated" in stderr and not (tmp_path / "bad").exists()
    victim.unlink()
    code, _, stderr = run_cli("convert", ws, tmp_path / "bad", "--dense")
    assert code == 1 and "im1.png.photometric.bin' is missing" in stderr and not (tmp_path / "bad").exists()


def test_dense_array_roundtrip(tmp_path):
    from depthcli.io.colmap import read_colmap_dense_array, write_colmap_dense_array

    a = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
    write_colmap_dense_array(tmp_path / "n.bin", a)
    raw = (tmp_path / "n.bin").read_bytes()
    assert raw.startswith(b"4&3&2&")
    # channel planes, each row-major: the first values are channel 0 of row 0
    assert np.frombuffer(raw[6:], "<f4")[:4].tolist() == a[0, :, 0].tolist()
    np.testing.assert_array_equal(read_colmap_dense_array(tmp_path / "n.bin"), a)


def test_downscale_depth_valid_by_hand():
    from depthcli.depth import downscale_depth_valid

    d = np.array(
        [[1, 2, 0, 5], [3, 4, 6, 7], [0, 0, np.nan, 0], [0, 0, 0, 8]], dtype=np.float32
    )
    # 2x2 blocks: all four samples equally near the centre -> first valid in row-major order
    np.testing.assert_array_equal(downscale_depth_valid(d, 2), [[1, 5], [0, 8]])
    e = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    assert downscale_depth_valid(e, 3).tolist() == [[5]]  # the centre sample
    e[1, 1] = 0
    assert downscale_depth_valid(e, 3).tolist() == [[2]]  # nearest valid: above the centre


def test_two_camera_rig(tmp_path, run_cli):
    """A rig with a posed second sensor (rigs/frames written by COLMAP's text format)."""
    model = tmp_path / "txt"
    model.mkdir()
    (model / "cameras.txt").write_text(f"1 PINHOLE {W} {H} {FX} {FY} {CX} {CY}\n2 SIMPLE_RADIAL {W} {H} {FX} {CX} {CY} 0.01\n")
    (model / "rigs.txt").write_text("1 2 CAMERA 1 CAMERA 2 1 1 0 0 0 -0.2 0 0\n")
    (model / "frames.txt").write_text("1 1 1 0 0 0 0.5 0 0 2 CAMERA 1 1 CAMERA 2 2\n")
    (model / "images.txt").write_text("1 1 0 0 0 0.5 0 0 1 a.png\n\n2 1 0 0 0 0.3 0 0 2 b.png\n\n")
    (model / "points3D.txt").write_text("")
    rec = pycolmap.Reconstruction()
    rec.read_text(str(model))
    proj = tmp_path / "proj"
    (proj / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(proj / "sparse" / "0"))
    (proj / "images").mkdir()
    for n in ("a.png", "b.png"):
        cv2.imwrite(str(proj / "images" / n), np.full((H, W, 3), 128, np.uint8))
    out = tmp_path / "ds"
    convert_ok(run_cli, proj, out)
    frames = {f["name"]: f for f in load_json_dataset(out)["frames"]}
    np.testing.assert_allclose(np.array(frames["a.png"]["cam_from_world"])[:3, 3], [0.5, 0, 0], atol=1e-12)
    # cam2_from_world = cam2_from_rig (t = -0.2 x) * rig_from_world (t = 0.5 x)
    np.testing.assert_allclose(np.array(frames["b.png"]["cam_from_world"])[:3, 3], [0.3, 0, 0], atol=1e-12)


# --------------------------------------------------------------------------- bad input


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _track_to_missing_image(proj: Path) -> None:
    p = proj / "sparse" / "0" / "points3D.txt"
    lines = p.read_text().splitlines()
    i = next(k for k, ln in enumerate(lines) if not ln.startswith("#"))
    v = lines[i].split()
    v[8] = "99"
    lines[i] = " ".join(v)
    p.write_text("\n".join(lines) + "\n")


def _track_to_missing_image_bin(proj: Path) -> None:
    # points3D.bin: uint64 count, then per point uint64 id, 3 double, 3 uint8, double error,
    # uint64 track length, (int32 image_id, int32 point2D_idx) * length
    p = proj / "sparse" / "0" / "points3D.bin"
    data = bytearray(p.read_bytes())
    data[8 + 43 + 8 : 8 + 43 + 12] = (99).to_bytes(4, "little")
    p.write_bytes(bytes(data))


def _truncate_text(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def _truncate_lines(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))


BAD_CASES = {
    "missing": (None, "does not exist"),
    "empty": (None, "is empty"),
    "truncated_cameras": (lambda p: _truncate(p / "sparse/0/cameras.bin"), "truncated"),
    "truncated_images": (lambda p: _truncate(p / "sparse/0/images.bin"), "truncated"),
    "truncated_points": (lambda p: _truncate(p / "sparse/0/points3D.bin"), "truncated"),
    "truncated_frames": (lambda p: _truncate(p / "sparse/0/frames.bin"), "truncated"),
    "incomplete_model": (lambda p: (p / "sparse/0/points3D.bin").unlink(), "incomplete COLMAP model"),
    "unknown_layout": (lambda p: (p / "sparse/0/frames.bin").unlink(), "unknown COLMAP layout"),
    "image_absent": (lambda p: (p / "images/im1.png").unlink(), "im1.png"),
    "image_unreadable": (lambda p: (p / "images/im0.png").write_bytes(b"not a png"), "cannot decode"),
    "no_image_folder": (lambda p: (p / "images").rename(p / "pics"), "no image folder"),
    "dense_missing": (None, "stereo/depth_maps"),
    "track_missing_image_txt": (_track_to_missing_image, "99"),
    "track_missing_image_bin": (_track_to_missing_image_bin, "99"),
    "truncated_images_txt": (lambda p: _truncate_text(p / "sparse/0/images.txt"), "COLMAP model"),
    "truncated_points_txt": (lambda p: _truncate_text(p / "sparse/0/points3D.txt"), "COLMAP model"),
    "truncated_points_txt_at_line": (lambda p: _truncate_lines(p / "sparse/0/points3D.txt"), "announces"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input(tmp_path, run_cli, case):
    mutate, needle = BAD_CASES[case]
    proj = tmp_path / "proj"
    flags: list[str] = []
    if case == "empty":
        proj.mkdir()
    elif case != "missing":
        build_model(proj, fmt="txt" if "_txt" in case else "bin", n_points=40)
        if mutate is not None:
            mutate(proj)
        if case == "dense_missing":
            flags = ["--dense"]
    before = tree_digest(proj) if proj.exists() else None
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("convert", proj, out, *flags)
    assert code == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    errors = [ln for ln in stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    assert needle in errors[0], errors[0]
    assert not out.exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), list(tmp_path.iterdir())
    if before is not None:
        assert tree_digest(proj) == before  # inputs never modified


def test_model_folder_with_images_flag_png16_max_frames(tmp_path, run_cli):
    truth = build_model(tmp_path / "proj", fmt="txt", n_points=60)
    (tmp_path / "proj" / "images").rename(tmp_path / "pics")
    out = tmp_path / "ds"
    convert_ok(run_cli, truth["model_dir"], out, "--images", tmp_path / "pics", "--max-frames", "2",
               "--depth-format", "png16")
    meta = load_json_dataset(out)
    assert [f["name"] for f in meta["frames"]] == ["im0.png", "im1.png"]
    for fr in meta["frames"]:
        assert fr["depth"].endswith(".png") and fr["sparse_points"] == fr["depth"][:-4] + ".points.npy"
        pts = np.load(out / fr["sparse_points"])
        stored = cv2.imread(str(out / fr["depth"]), cv2.IMREAD_UNCHANGED).astype(np.float64) / fr["depth_scale"]
        d = stored[np.floor(pts[:, 1]).astype(int), np.floor(pts[:, 0]).astype(int)]
        # png16 quantises depth: within half a step of the exact z (or a nearer point)
        assert np.all((np.abs(d - pts[:, 2]) <= 0.5 / fr["depth_scale"] + 1e-9) | (d < pts[:, 2]))


def test_existing_output_needs_overwrite(tmp_path, run_cli):
    build_model(tmp_path / "proj", n_points=30)
    out = tmp_path / "ds"
    convert_ok(run_cli, tmp_path / "proj", out)
    code, _, stderr = run_cli("convert", tmp_path / "proj", out)
    assert code == 1 and "already exists" in stderr
    convert_ok(run_cli, tmp_path / "proj", out, "--overwrite")


def test_spherical_camera_refused(tmp_path, run_cli):
    proj = tmp_path / "proj"
    (proj / "sparse" / "0").mkdir(parents=True)
    (proj / "images").mkdir()
    m = proj / "sparse" / "0"
    (m / "cameras.txt").write_text(f"1 EQUIRECTANGULAR {W} {H}\n")
    (m / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n")
    (m / "points3D.txt").write_text("")
    cv2.imwrite(str(proj / "images" / "a.png"), np.zeros((H, W, 3), np.uint8))
    code, _, stderr = run_cli("convert", proj, tmp_path / "out")
    assert code == 1 and "spherical" in stderr and not (tmp_path / "out").exists()
