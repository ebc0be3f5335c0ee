"""The depth dataset contract: writer/reader round trips, validation, atomic output."""

import json

import numpy as np
import pytest

from depthcli.errors import DepthcliError
from depthcli.io.atomic import atomic_output_dir
from depthcli.io.dataset import DatasetWriter, load_dataset
from depthcli.io.depth_files import read_depth_file, read_pfm, write_pfm


def _frame_data(seed=0, h=6, w=8):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.3, 9.0, size=(h, w)).astype(np.float32)
    depth[0, :3] = 0.0
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    K = np.array([[7.0, 0, 4.0], [0, 7.5, 3.0], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = [0.1, -0.2, 0.3]
    return depth, image, K, pose


def _write(tmp_path, fmt, previews=False, units="m", scale=None):
    depth, image, K, pose = _frame_data()
    with atomic_output_dir(tmp_path / "ds") as tmp:
        w = DatasetWriter(tmp, depth_units=units, source={"kind": "test"}, depth_format=fmt, depth_scale=scale, previews=previews)
        w.add_frame("cam/a b.jpg", depth, K, pose, image=image)
        w.add_frame("depth-only", depth * 2, K, pose)
        summary = w.close()
    return summary, depth, image, K, pose


def test_npy_round_trip_is_exact(tmp_path):
    summary, depth, image, K, pose = _write(tmp_path, "npy", previews=True)
    ds = load_dataset(tmp_path / "ds")
    assert summary["frames"] == 2 and ds.depth_units == "m" and ds.depth_kind == "z"
    f0, f1 = ds.frames
    assert f0.name == "cam/a b.jpg" and f0.image == "images/cam_a_b.png"
    np.testing.assert_array_equal(ds.read_depth(f0), depth)
    np.testing.assert_array_equal(ds.read_image(f0), image)  # PNG is lossless
    np.testing.assert_array_equal(f0.K, K)
    np.testing.assert_array_equal(f0.cam_from_world, pose)
    assert f1.image is None and ds.read_image(f1) is None
    assert (tmp_path / "ds" / "previews" / "cam_a_b.png").exists()
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["format"] == "depthcli.dataset" and meta["version"] == 1 and meta["invalid_value"] == 0


def test_png16_round_trip_millimetres(tmp_path):
    _, depth, *_ = _write(tmp_path, "png16")
    ds = load_dataset(tmp_path / "ds")
    f0 = ds.frames[0]
    assert f0.depth.endswith(".png") and f0.depth_scale == 1000.0
    got = ds.read_depth(f0)
    # Stored as integer millimetres: error at most half a millimetre; invalid stays 0.
    assert np.abs(got - depth).max() <= 0.0005 + 1e-6
    assert (got[0, :3] == 0).all()


def test_png16_overflow_becomes_invalid_and_is_counted(tmp_path):
    depth = np.array([[1.0, 70.0]], np.float32)  # 70 m * 1000 > 65535
    with atomic_output_dir(tmp_path / "ds") as tmp:
        w = DatasetWriter(tmp, depth_units="m", source={}, depth_format="png16")
        w.add_frame("f", depth, np.eye(3), np.eye(4))
        summary = w.close()
    assert summary["png16_overflow_pixels"] == 1
    ds = load_dataset(tmp_path / "ds")
    assert ds.read_depth(ds.frames[0]).tolist() == [[1.0, 0.0]]


def test_png16_sfm_units_choose_scale_per_frame(tmp_path):
    depth = np.array([[0.5, 123.0]], np.float32)
    with atomic_output_dir(tmp_path / "ds") as tmp:
        w = DatasetWriter(tmp, depth_units="sfm", source={}, depth_format="png16")
        w.add_frame("f", depth, np.eye(3), np.eye(4))
        w.close()
    ds = load_dataset(tmp_path / "ds")
    scale = ds.frames[0].depth_scale
    assert 123.0 * scale <= 65535
    np.testing.assert_allclose(ds.read_depth(ds.frames[0]), depth, atol=0.5 / scale + 1e-6)


def test_pfm_round_trip(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    write_pfm(tmp_path / "a.pfm", a)
    np.testing.assert_array_equal(read_pfm(tmp_path / "a.pfm"), a)
    np.testing.assert_array_equal(read_depth_file(tmp_path / "a.pfm"), a)


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output_dir(tmp_path / "ds") as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    from depthcli.io.atomic import mark_output

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset.json").write_text("old")
    mark_output(tmp_path / "ds", "test")  # only depthcli's marker makes a folder replaceable
    with pytest.raises(DepthcliError, match="already exists"):
        with atomic_output_dir(tmp_path / "ds"):
            pass
    assert (tmp_path / "ds" / "dataset.json").read_text() == "old"
    with atomic_output_dir(tmp_path / "ds", overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [".depthcli", "new"]
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_reader_rejects_bad_metadata(tmp_path):
    _write(tmp_path, "npy")
    meta_path = tmp_path / "ds" / "dataset.json"
    meta = json.loads(meta_path.read_text())
    bad = dict(meta, depth_units="feet")
    meta_path.write_text(json.dumps(bad))
    with pytest.raises(DepthcliError, match="depth_units"):
        load_dataset(tmp_path / "ds")
    bad = dict(meta)
    bad["frames"] = [dict(meta["frames"][0], K=[[1, 2], [3, 4]])]
    meta_path.write_text(json.dumps(bad))
    with pytest.raises(DepthcliError, match="3x3"):
        load_dataset(tmp_path / "ds")
    meta_path.write_text("{not json")
    with pytest.raises(DepthcliError, match="not valid JSON"):
        load_dataset(tmp_path / "ds")
    with pytest.raises(DepthcliError, match="no dataset.json"):
        load_dataset(tmp_path)


def test_reader_reports_nan_and_wrong_size(tmp_path):
    _write(tmp_path, "npy")
    ds = load_dataset(tmp_path / "ds")
    f0 = ds.frames[0]
    d = np.load(tmp_path / "ds" / f0.depth)
    d[2, 2] = np.nan
    np.save(tmp_path / "ds" / f0.depth, d)
    with pytest.raises(DepthcliError, match="NaN/Inf"):
        ds.read_depth(f0)
    assert ds.read_depth(f0, nonfinite="invalid")[2, 2] == 0
    np.save(tmp_path / "ds" / f0.depth, d[:, :-1])
    with pytest.raises(DepthcliError, match="dataset.json says 8x6"):
        ds.read_depth(f0)


def test_overwrite_never_replaces_a_foreign_folder(tmp_path):
    from depthcli.io.atomic import MARKER

    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(DepthcliError, match="not a folder depthcli created"):
        with atomic_output_dir(foreign, overwrite=True):
            pass
    assert (foreign / "thesis.tex").read_text() == "precious"
    # A folder depthcli wrote carries the marker and may be replaced.
    with atomic_output_dir(tmp_path / "ds") as tmp:
        (tmp / "a").write_text("1")
    assert (tmp_path / "ds" / MARKER).is_file()
    with atomic_output_dir(tmp_path / "ds", overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [MARKER, "b"]


def test_depth_preview_near_bright_far_dark_invalid_black():
    import cv2

    from depthcli.io.previews import colorize_depth

    depth = np.array([[1.0, 4.0, 0.0]], np.float32)
    rgb = colorize_depth(depth, lo=1.0, hi=4.0)
    lut = cv2.applyColorMap(np.array([[255, 0]], np.uint8), cv2.COLORMAP_MAGMA)[0, :, ::-1]
    assert rgb[0, 0].tolist() == lut[0].tolist()  # nearest depth -> top of the colormap
    assert rgb[0, 1].tolist() == lut[1].tolist()  # farthest -> bottom
    assert rgb[0, 2].tolist() == [0, 0, 0]  # invalid
