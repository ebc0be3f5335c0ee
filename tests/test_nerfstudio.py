"""nerfstudio ``transforms.json``: the reader (axes, intrinsics, depth units, refusals) and ``convert --from nerfstudio``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

W, H = 8, 6


def _project(tmp_path: Path, frames: list[dict] | None = None, shared: dict | None = None, depth_raw: int = 1500,
             npy: bool = False) -> Path:
    """A two-frame project; camera 0 sits at (1, 2, 3) with identity OpenGL rotation (looks along world -z)."""
    root = tmp_path / "proj"
    (root / "images").mkdir(parents=True)
    (root / "depth").mkdir()
    if frames is None:
        frames = []
        for i, pos in enumerate([(1.0, 2.0, 3.0), (0.0, 0.0, 0.0)]):
            T = np.eye(4)
            T[:3, 3] = pos
            frames.append({"file_path": f"images/f{i}.png", "depth_file_path": f"depth/f{i}.{'npy' if npy else 'png'}",
                           "transform_matrix": T.tolist()})
    for fj in frames:
        cv2.imwrite(str(root / fj["file_path"]), np.full((H, W, 3), 40, np.uint8))
        if fj.get("depth_file_path"):
            if npy:
                np.save(root / fj["depth_file_path"], np.full((H, W), depth_raw, np.float32))
            else:
                cv2.imwrite(str(root / fj["depth_file_path"]), np.full((H, W), depth_raw, np.uint16))
    meta = {"camera_model": "OPENCV", "fl_x": 10.0, "fl_y": 11.0, "cx": 4.0, "cy": 3.0, "w": W, "h": H}
    if shared is not None:
        meta = shared
    meta["frames"] = frames
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def test_axes_and_intrinsics_by_hand(tmp_path):
    from depthcli.io.nerfstudio import read_depth, read_transforms

    proj = read_transforms(_project(tmp_path))
    f = proj.frames[0]
    # OpenGL camera at c = (1, 2, 3) with identity rotation: OpenCV axes are (x, -y, -z) of it, so
    # cam_from_world = [R | -R c] with R = diag(1, -1, -1).
    expect = np.eye(4)
    expect[:3, :3] = np.diag([1.0, -1.0, -1.0])
    expect[:3, 3] = [-1.0, 2.0, 3.0]
    np.testing.assert_allclose(f.cam_from_world, expect, atol=1e-15)
    np.testing.assert_allclose(f.K, [[10, 0, 4], [0, 11, 3], [0, 0, 1]])  # cx, cy unchanged (same pixel centres)
    # A world point 3 m in front of the camera (along world -z) and 1 m "up" (world +y):
    X = np.array([1.0, 3.0, 0.0, 1.0])
    xc = f.cam_from_world @ X
    assert xc[2] == pytest.approx(3.0) and xc[1] == pytest.approx(-1.0)  # z forward, y down in OpenCV axes
    assert read_depth(f, proj.depth_unit_scale_factor) == pytest.approx(np.full((H, W), 1.5))  # 1500 mm


def test_depth_unit_scale_factor_from_json_and_npy(tmp_path):
    from depthcli.io.nerfstudio import read_depth, read_transforms

    shared = {"fl_x": 10.0, "fl_y": 10.0, "cx": 4.0, "cy": 3.0, "w": W, "h": H, "depth_unit_scale_factor": 0.0002}
    proj = read_transforms(_project(tmp_path, shared=shared, npy=True, depth_raw=2000))
    assert read_depth(proj.frames[0], proj.depth_unit_scale_factor) == pytest.approx(np.full((H, W), 0.4))


def test_per_frame_intrinsics(tmp_path):
    from depthcli.io.nerfstudio import read_transforms

    frames = [
        {"file_path": "images/a.png", "transform_matrix": np.eye(4).tolist(), "fl_x": 5, "fl_y": 6, "cx": 4, "cy": 3, "w": W, "h": H},
        {"file_path": "images/b.png", "transform_matrix": np.eye(4)[:3].tolist(), "fl_x": 7, "fl_y": 8, "cx": 4.5, "cy": 2.5, "w": W, "h": H},
    ]
    proj = read_transforms(_project(tmp_path, frames=frames, shared={}))
    assert [f.K[0, 0] for f in proj.frames] == [5, 7] and proj.frames[1].K[1, 2] == 2.5
    assert [f.depth for f in proj.frames] == [None, None]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"k1": 0.1}, "distorted"),
        ({"camera_model": "OPENCV_FISHEYE"}, "not a perspective camera"),
        ({"fl_x": None}, "fl_x"),
        ({"depth_unit_scale_factor": -1}, "depth_unit_scale_factor"),
    ],
)
def test_refusals_top_level(tmp_path, change, message):
    from depthcli.errors import DepthcliError
    from depthcli.io.nerfstudio import read_transforms

    shared = {"camera_model": "OPENCV", "fl_x": 10.0, "fl_y": 10.0, "cx": 4.0, "cy": 3.0, "w": W, "h": H, **change}
    shared = {k: v for k, v in shared.items() if v is not None}
    with pytest.raises(DepthcliError, match=message):
        read_transforms(_project(tmp_path, shared=shared))


def test_zero_distortion_is_accepted(tmp_path):
    from depthcli.io.nerfstudio import read_transforms

    shared = {"fl_x": 10.0, "fl_y": 10.0, "cx": 4.0, "cy": 3.0, "w": W, "h": H, "k1": 0, "k2": 0.0, "p1": 0, "p2": 0}
    assert len(read_transforms(_project(tmp_path, shared=shared)).frames) == 2


def test_bad_poses_and_partial_depth(tmp_path):
    from depthcli.errors import DepthcliError
    from depthcli.io.nerfstudio import read_transforms

    nan = np.eye(4)
    nan[0, 3] = np.nan
    frames = [{"file_path": "images/a.png", "transform_matrix": json.loads(json.dumps(nan.tolist()))}]
    with pytest.raises(DepthcliError, match="finite"):
        read_transforms(_project(tmp_path / "a", frames=frames))
    frames = [{"file_path": "images/a.png", "transform_matrix": (2 * np.eye(4)).tolist()}]
    with pytest.raises(DepthcliError, match="not a rigid"):
        read_transforms(_project(tmp_path / "b", frames=frames))
    frames = [
        {"file_path": "images/a.png", "transform_matrix": np.eye(4).tolist(), "depth_file_path": "depth/a.png"},
        {"file_path": "images/b.png", "transform_matrix": np.eye(4).tolist()},
    ]
    with pytest.raises(DepthcliError, match="1 of 2 frames"):
        read_transforms(_project(tmp_path / "c", frames=frames))
    with pytest.raises(DepthcliError, match="no transforms.json"):
        read_transforms(tmp_path / "nowhere")


def test_convert_cli_from_nerfstudio(tmp_path, run_cli):
    from depthcli.io.dataset import load_dataset

    src = _project(tmp_path)
    before = sorted(p.name for p in src.rglob("*"))
    code, stdout, err = run_cli("convert", src, tmp_path / "ds", "--json")
    assert code == 0, err
    assert json.loads(stdout)["detected"] == "nerfstudio"
    ds = load_dataset(tmp_path / "ds")
    assert ds.depth_units == "m" and ds.depth_kind == "z" and ds.source["kind"] == "nerfstudio"
    assert ds.read_depth(ds.frames[0]) == pytest.approx(np.full((H, W), 1.5))
    assert sorted(p.name for p in src.rglob("*")) == before  # input untouched
    # A project without depth is refused with one clear line.
    frames = [{"file_path": "images/a.png", "transform_matrix": np.eye(4).tolist()}]
    nodepth = _project(tmp_path / "n", frames=frames)
    code, _, err = run_cli("convert", nodepth, tmp_path / "ds2", "--from", "nerfstudio")
    assert code == 1 and "has no depth" in err and "Traceback" not in err
    assert not (tmp_path / "ds2").exists()
