"""3DGS PLY read/write: layout, round trip, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from depthcli.errors import DepthcliError
from depthcli.io.ply import SH_C0, SplatArrays, read_splats_ply, write_splats_ply


def _arrays(n=5, colors=True, seed=0):
    rng = np.random.default_rng(seed)
    return SplatArrays(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        log_scales=rng.normal(-3, 0.5, size=(n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        opacity_logits=rng.normal(size=n).astype(np.float32),
        f_dc=rng.normal(size=(n, 3)).astype(np.float32) if colors else np.zeros((n, 3), np.float32),
        has_colors=colors,
    )


def test_round_trip_is_exact(tmp_path):
    a = _arrays()
    write_splats_ply(tmp_path / "s.ply", a)
    b = read_splats_ply(tmp_path / "s.ply")
    for name in ("means", "log_scales", "quats", "opacity_logits", "f_dc"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert b.has_colors and len(b) == 5


def test_standard_3dgs_layout(tmp_path):
    from plyfile import PlyData

    write_splats_ply(tmp_path / "s.ply", _arrays(3))
    ply = PlyData.read(str(tmp_path / "s.ply"))
    names = list(ply["vertex"].data.dtype.names)
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert names == expected
    assert all(ply["vertex"].data.dtype[n] == np.dtype("<f4") for n in names)
    assert not ply.text  # binary, as viewers expect


def test_colors_from_sh_dc(tmp_path):
    a = _arrays(2)
    a.f_dc[:] = [[0.0, 1.0, -1.0], [10.0, -10.0, 0.5]]
    rgb = a.colors_rgb
    np.testing.assert_allclose(rgb[0], [0.5, 0.5 + SH_C0, 0.5 - SH_C0], rtol=1e-6)
    np.testing.assert_allclose(rgb[1], [1.0, 0.0, 0.5 + 0.5 * SH_C0], rtol=1e-6)


def test_depth_only_flag_survives(tmp_path):
    write_splats_ply(tmp_path / "s.ply", _arrays(4, colors=False))
    b = read_splats_ply(tmp_path / "s.ply")
    assert not b.has_colors


@pytest.mark.parametrize("content", [b"", b"ply\nformat binary_little_endian 1.0\nelement vertex 10\n", b"garbage" * 10])
def test_corrupted_file_is_a_clear_error(tmp_path, content):
    (tmp_path / "bad.ply").write_bytes(content)
    with pytest.raises(DepthcliError):
        read_splats_ply(tmp_path / "bad.ply")


def test_truncated_binary_is_an_error(tmp_path):
    write_splats_ply(tmp_path / "s.ply", _arrays(50))
    data = (tmp_path / "s.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(data[: len(data) - 100])
    with pytest.raises(DepthcliError):
        read_splats_ply(tmp_path / "t.ply")


def test_empty_and_point_cloud_are_errors(tmp_path):
    from plyfile import PlyData, PlyElement

    write_splats_ply(tmp_path / "empty.ply", _arrays(0))
    with pytest.raises(DepthcliError, match="no Gaussians"):
        read_splats_ply(tmp_path / "empty.ply")
    pts = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    PlyData([PlyElement.describe(pts, "vertex")]).write(str(tmp_path / "cloud.ply"))
    with pytest.raises(DepthcliError, match="missing"):
        read_splats_ply(tmp_path / "cloud.ply")
    with pytest.raises(DepthcliError, match="does not exist"):
        read_splats_ply(tmp_path / "nope.ply")


def test_nan_parameters_are_an_error(tmp_path):
    a = _arrays(3)
    a.means[1, 0] = np.nan
    write_splats_ply(tmp_path / "s.ply", a)
    with pytest.raises(DepthcliError, match="NaN"):
        read_splats_ply(tmp_path / "s.ply")
