"""``depthcli export``: nerfstudio, COLMAP and PLY outputs, and exact round trips back to datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_data

cv2 = pytest.importorskip("cv2")  # before pycolmap: see depthcli.io.colmap.import_pycolmap


@pytest.fixture(scope="module")
def synth_ds(tmp_path_factory) -> Path:
    from depthcli.synth.generate import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("export") / "syn"
    synthesize(SynthConfig(out=out, frames=3, width=48, height=36, seed=3))
    return out


@pytest.fixture(scope="module")
def redkitchen_ds(tmp_path_factory) -> Path:
    from depthcli.convert import ConvertConfig, convert

    src = shared_data("rgbd", "7scenes_redkitchen")
    out = tmp_path_factory.mktemp("export") / "redkitchen"
    convert(ConvertConfig(source=src, out=out, max_frames=3))
    return out


def _export(ds: Path, out: Path, to: str, **kw) -> dict:
    from depthcli.export import ExportConfig, export_dataset

    return export_dataset(ExportConfig(dataset=ds, out=out, to=to, **kw))


# ----------------------------------------------------------------------------- nerfstudio


def _check_nerfstudio_roundtrip(ds_path: Path, tmp_path: Path) -> None:
    from depthcli.convert import ConvertConfig, convert
    from depthcli.io.dataset import load_dataset

    ns = tmp_path / "ns"
    _export(ds_path, ns, "nerfstudio")
    back = tmp_path / "back"
    summary = convert(ConvertConfig(source=ns, out=back))  # auto-detected by transforms.json
    assert summary["detected"] == "nerfstudio"
    a, b = load_dataset(ds_path), load_dataset(back)
    assert len(a.frames) == len(b.frames)
    for fa in a.frames:
        fb = b.frame(fa.name)
        np.testing.assert_allclose(fb.K, fa.K, rtol=0, atol=1e-12)
        np.testing.assert_allclose(fb.cam_from_world, fa.cam_from_world, rtol=0, atol=1e-12)
        da, db = a.read_depth(fa), b.read_depth(fb)
        np.testing.assert_array_equal(da > 0, db > 0)
        assert np.abs(da - db).max() <= 0.0005 + 1e-6  # 16-bit millimetres: half a millimetre


def test_nerfstudio_fields_and_axes(synth_ds, tmp_path):
    from depthcli.io.dataset import load_dataset

    ns = tmp_path / "ns"
    summary = _export(synth_ds, ns, "nerfstudio")
    meta = json.loads((ns / "transforms.json").read_text())
    # Every key nerfstudio's parser reads for a pinhole project with depth and a point cloud.
    for key in ("camera_model", "fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "k3", "k4", "p1", "p2", "ply_file_path"):
        assert key in meta, key
    assert meta["camera_model"] == "OPENCV" and meta["depth_unit_scale_factor"] == 0.001
    assert all(meta[k] == 0 for k in ("k1", "k2", "k3", "k4", "p1", "p2"))
    assert all({"file_path", "depth_file_path", "transform_matrix"} <= set(fj) for fj in meta["frames"])
    assert (ns / meta["ply_file_path"]).is_file() and summary["points"] > 0
    ds = load_dataset(synth_ds)
    assert meta["cx"] == ds.frames[0].K[0, 2] and meta["fl_x"] == ds.frames[0].K[0, 0]
    for fa, fj in zip(ds.frames, meta["frames"]):
        assert (ns / fj["file_path"]).is_file()
        c2w_gl = np.array(fj["transform_matrix"])
        world_from_cam = np.linalg.inv(fa.cam_from_world)
        # Same camera centre; OpenGL x = OpenCV x, OpenGL y = -OpenCV y (up), the camera looks along -z.
        np.testing.assert_allclose(c2w_gl[:3, 3], world_from_cam[:3, 3], atol=1e-12)
        np.testing.assert_allclose(c2w_gl[:3, 0], world_from_cam[:3, 0], atol=1e-12)
        np.testing.assert_allclose(c2w_gl[:3, 1], -world_from_cam[:3, 1], atol=1e-12)
        np.testing.assert_allclose(-c2w_gl[:3, 2], world_from_cam[:3, 2], atol=1e-12)
        # Depth file: uint16 millimetres, read here with OpenCV alone.
        raw = cv2.imread(str(ns / fj["depth_file_path"]), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16
        d = ds.read_depth(fa)
        np.testing.assert_allclose(raw * 0.001, d, atol=0.0005 + 1e-6)


def test_nerfstudio_roundtrip_synth(synth_ds, tmp_path):
    _check_nerfstudio_roundtrip(synth_ds, tmp_path)


def test_nerfstudio_roundtrip_redkitchen(redkitchen_ds, tmp_path):
    _check_nerfstudio_roundtrip(redkitchen_ds, tmp_path)


# ----------------------------------------------------------------------------- COLMAP


def _check_colmap_roundtrip(ds_path: Path, tmp_path: Path, points_per_frame: int = 500) -> None:
    from depthcli.convert import ConvertConfig, convert
    from depthcli.io.dataset import load_dataset

    cm = tmp_path / "colmap"
    _export(ds_path, cm, "colmap", points_per_frame=points_per_frame)
    back = tmp_path / "back"
    convert(ConvertConfig(source=cm, out=back))
    a, b = load_dataset(ds_path), load_dataset(back)
    assert b.source["kind"] == "colmap" and len(b.frames) == len(a.frames)
    by_stem = {Path(f.name).stem: f for f in b.frames}
    total = 0
    for fa in a.frames:
        fb = by_stem[Path(fa.image).stem]
        np.testing.assert_allclose(fb.K, fa.K, rtol=0, atol=1e-12)
        np.testing.assert_allclose(fb.cam_from_world, fa.cam_from_world, rtol=0, atol=1e-12)
        pts = np.load(back / fb.extra["sparse_points"])  # u, v, z, point3D_id
        d = a.read_depth(fa)
        rows, cols = np.floor(pts[:, 1]).astype(int), np.floor(pts[:, 0]).astype(int)
        assert len(pts) == min(points_per_frame, int((d > 0).sum()))
        # Every sparse depth sits at the pixel it came from, with that pixel's depth.
        np.testing.assert_allclose(pts[:, 2], d[rows, cols], rtol=1e-6)
        np.testing.assert_allclose(b.read_depth(fb)[rows, cols], d[rows, cols], rtol=1e-6)
        total += len(pts)
    assert total > 0


def test_colmap_roundtrip_synth(synth_ds, tmp_path):
    _check_colmap_roundtrip(synth_ds, tmp_path)


def test_colmap_roundtrip_redkitchen(redkitchen_ds, tmp_path):
    _check_colmap_roundtrip(redkitchen_ds, tmp_path, points_per_frame=3000)


def test_colmap_reads_back_with_pycolmap(synth_ds, tmp_path):
    from depthcli.io.colmap import import_pycolmap
    from depthcli.io.dataset import load_dataset

    pycolmap = import_pycolmap()
    cm = tmp_path / "colmap"
    _export(synth_ds, cm, "colmap", points_per_frame=100)
    rec = pycolmap.Reconstruction(str(cm / "sparse" / "0"))
    ds = load_dataset(synth_ds)
    assert rec.num_reg_images() == len(ds.frames) and rec.num_points3D() == 100 * len(ds.frames)
    by_name = {im.name: im for im in rec.images.values()}
    for f in ds.frames:
        im = by_name[Path(f.image).name]
        cfw = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
        np.testing.assert_allclose(np.asarray(cfw.matrix()), f.cam_from_world[:3], atol=1e-12)
        cam = rec.cameras[im.camera_id]
        assert cam.model.name == "PINHOLE" and (cam.width, cam.height) == (f.width, f.height)
        # Each observation: its point projects through pycolmap's camera onto the stored pixel.
        for p2d in list(im.points2D)[:20]:
            pt = rec.points3D[p2d.point3D_id]
            assert [(el.image_id, el.point2D_idx) for el in pt.track.elements][0][0] == im.image_id
            xc = f.cam_from_world[:3, :3] @ pt.xyz + f.cam_from_world[:3, 3]
            np.testing.assert_allclose(np.asarray(cam.img_from_cam(xc)).ravel()[:2], np.asarray(p2d.xy), atol=1e-9)


# ----------------------------------------------------------------------------- PLY


def test_ply_points_lie_on_the_depth(synth_ds, tmp_path):
    from depthcli.io.dataset import load_dataset
    from depthcli.io.ply import read_points_ply

    out = tmp_path / "ply"
    # A voxel far smaller than a pixel's footprint (~2 cm here) keeps every back-projected point.
    summary = _export(synth_ds, out, "ply", voxel_size=1e-5)
    xyz, rgb = read_points_ply(out / "points.ply")
    ds = load_dataset(synth_ds)
    f = ds.frames[0]
    d = ds.read_depth(f)
    assert len(xyz) == summary["backprojected_points"] == sum(int((ds.read_depth(g) > 0).sum()) for g in ds.frames)
    # Project into frame 0 (independent pinhole formula): points of frame 0 land on pixel centres with its depth.
    pc = xyz @ f.cam_from_world[:3, :3].T + f.cam_from_world[:3, 3]
    u = f.K[0, 0] * pc[:, 0] / pc[:, 2] + f.K[0, 2]
    v = f.K[1, 1] * pc[:, 1] / pc[:, 2] + f.K[1, 2]
    on_centre = (np.abs(u - np.floor(u) - 0.5) < 1e-4) & (np.abs(v - np.floor(v) - 0.5) < 1e-4) & (pc[:, 2] > 0)
    cols, rows = np.floor(u[on_centre]).astype(int), np.floor(v[on_centre]).astype(int)
    ok = np.abs(d[rows, cols] - pc[on_centre, 2]) < 1e-4
    assert ok.sum() >= int((d > 0).sum())
    img = ds.read_image(f)
    match = rgb[on_centre][ok] == img[rows[ok], cols[ok]]
    assert match.all(axis=1).mean() > 0.99


def test_voxel_accumulator_averages_by_hand():
    from depthcli.export import VoxelAccumulator

    acc = VoxelAccumulator(1.0)
    acc.add(np.array([[0.1, 0.1, 0.1], [0.3, 0.5, 0.9], [1.5, 0.2, 0.2]]), np.array([[0, 0, 0], [100, 50, 10], [7, 7, 7]]))
    acc.add(np.array([[-0.5, 0.0, 0.0]]), None)
    xyz, rgb = acc.result()
    order = np.lexsort(xyz.T[::-1])
    xyz, rgb = xyz[order], rgb[order]
    np.testing.assert_allclose(xyz, [[-0.5, 0, 0], [0.2, 0.3, 0.5], [1.5, 0.2, 0.2]])
    np.testing.assert_array_equal(rgb, [[0, 0, 0], [50, 25, 5], [7, 7, 7]])
    # Far from the world origin is fine (indices are packed around the first batch) ...
    far = VoxelAccumulator(0.01)
    far.add(np.array([[5e5, 4e5, 1.0], [5e5 + 0.005, 4e5, 1.0], [5e5 + 0.5, 4e5, 1.0]]), None)
    assert len(far.result()[0]) == 2
    # ... but a span beyond the packed range is a clear error, not a wrong cloud.
    from depthcli.errors import DepthcliError

    with pytest.raises(DepthcliError, match="larger --voxel-size"):
        far.add(np.array([[5e5 + 2e4, 4e5, 1.0]]), None)


# ----------------------------------------------------------------------------- CLI and bad input


def test_cli_export_json_and_overwrite(synth_ds, tmp_path, run_cli):
    out = tmp_path / "o"
    code, stdout, _ = run_cli("export", synth_ds, out, "--to", "ply", "--json")
    assert code == 0 and json.loads(stdout)["points"] > 0
    code, _, err = run_cli("export", synth_ds, out, "--to", "ply")
    assert code == 1 and "already exists" in err and "Traceback" not in err
    code, _, _ = run_cli("export", synth_ds, out, "--to", "colmap", "--overwrite")
    assert code == 0 and (out / "sparse" / "0" / "points3D.txt").is_file() and not (out / "points.ply").exists()


def test_cli_export_bad_input(synth_ds, tmp_path, run_cli):
    code, _, err = run_cli("export", synth_ds, tmp_path / "x", "--to", "obj")
    assert code == 1 and "unknown export format" in err and not (tmp_path / "x").exists()
    code, _, err = run_cli("export", tmp_path / "missing", tmp_path / "y", "--to", "ply")
    assert code == 1 and "does not exist" in err


def test_export_refuses_disparity_and_depth_only(tmp_path):
    from depthcli.errors import DepthcliError
    from depthcli.io.dataset import DatasetWriter

    K = np.array([[10.0, 0, 4], [0, 10, 3], [0, 0, 1]])
    rel = tmp_path / "rel"
    rel.mkdir()
    w = DatasetWriter(rel, depth_units="affine", depth_kind="disparity", source={"kind": "predict"})
    w.add_frame("a", np.ones((6, 8)), K, np.eye(4), image=np.zeros((6, 8, 3), np.uint8))
    w.close()
    with pytest.raises(DepthcliError, match="z-depth"):
        _export(rel, tmp_path / "o1", "ply")
    donly = tmp_path / "donly"
    donly.mkdir()
    w = DatasetWriter(donly, depth_units="m", source={"kind": "synth"})
    w.add_frame("a", np.ones((6, 8)), K, np.eye(4))
    w.close()
    with pytest.raises(DepthcliError, match="no image"):
        _export(donly, tmp_path / "o2", "colmap")
    assert not (tmp_path / "o2").exists()
    _export(donly, tmp_path / "o3", "ply")  # depth-only data still makes a (grey) point cloud
    assert (tmp_path / "o3" / "points.ply").is_file()


def test_nerfstudio_per_frame_intrinsics_and_sfm_units(tmp_path):
    """Frames with different K get per-frame intrinsics; SfM-unit depth keeps its unit through one global scale."""
    from depthcli.convert import ConvertConfig, convert
    from depthcli.geometry import make_K
    from depthcli.io.dataset import DatasetWriter, load_dataset

    rng = np.random.default_rng(0)
    src = tmp_path / "sfm"
    src.mkdir()
    w = DatasetWriter(src, depth_units="sfm", source={"kind": "test"})
    for i, K in enumerate([make_K(30, 31, 10.2, 7.9), make_K(40, 40, 9.5, 8.5)]):
        depth = (0.5 + 3 * rng.random((16, 20))).astype(np.float32)
        depth[0] = 0
        pose = np.eye(4)
        pose[:3, 3] = [0.1 * i, -0.2, 0.3]
        w.add_frame(f"v{i}", depth, K, pose, image=rng.integers(0, 255, (16, 20, 3), dtype=np.uint8))
    w.close()
    ns = tmp_path / "ns"
    _export(src, ns, "nerfstudio")
    meta = json.loads((ns / "transforms.json").read_text())
    assert "fl_x" not in meta and [f["fl_x"] for f in meta["frames"]] == [30, 40]
    scale = 1.0 / meta["depth_unit_scale_factor"]
    a = load_dataset(src)
    top = max(float(a.read_depth(f).max()) for f in a.frames)
    assert top * scale <= 65535 and top * scale > 60000  # the largest scale that fits every frame
    back = tmp_path / "back"
    convert(ConvertConfig(source=ns, out=back, source_kind="nerfstudio"))
    b = load_dataset(back)
    assert b.depth_units == "sfm"
    for fa in a.frames:
        fb = b.frame(fa.name)
        np.testing.assert_allclose(fb.K, fa.K, atol=1e-12)
        np.testing.assert_allclose(fb.cam_from_world, fa.cam_from_world, atol=1e-12)
        assert np.abs(a.read_depth(fa) - b.read_depth(fb)).max() <= 0.5 / scale + 1e-6


def test_export_refusals_are_clean(tmp_path, run_cli):
    """One line, non-zero exit, nothing left behind, the dataset byte-identical."""
    from hostile import assert_refused, tiny_dataset

    ds = tiny_dataset(tmp_path / "ds")
    donly = tiny_dataset(tmp_path / "donly", images=False)
    assert_refused(run_cli, ["export", ds, ds / "sub", "--to", "ply"], inputs=[ds], absent=[ds / "sub"], match="inside")
    assert_refused(run_cli, ["export", ds, tmp_path, "--to", "ply"], inputs=[ds], match="contains|current|exists")
    assert_refused(run_cli, ["export", ds, tmp_path / "o", "--to", "obj"], inputs=[ds], absent=[tmp_path / "o"],
                   match="unknown export format")
    assert_refused(run_cli, ["export", donly, tmp_path / "o", "--to", "nerfstudio"], inputs=[donly],
                   absent=[tmp_path / "o"], match="no image")
    assert_refused(run_cli, ["export", ds, tmp_path / "o", "--to", "ply", "--voxel-size", "-1"], inputs=[ds],
                   absent=[tmp_path / "o"], match="voxel-size")
