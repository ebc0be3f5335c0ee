"""depthcli's pixel convention (centre of pixel (row, col) at (col + 0.5, row + 0.5)) holds across
the modules that use K, and published (OpenCV, integer-centre) intrinsics are shifted by +0.5."""

from __future__ import annotations

import numpy as np

from depthcli.convert.common import K_from_opencv
from depthcli.depth import backproject_depth, pixel_grid, ray_length_from_z_depth
from depthcli.geometry import make_K, project_points


def test_backproject_then_project_lands_on_pixel_centres():
    K = make_K(50.0, 40.0, 7.3, 4.1)
    depth = np.arange(1, 1 + 6 * 9, dtype=np.float32).reshape(6, 9)
    pts, rc = backproject_depth(depth, K)
    uv, z = project_points(pts, K, np.eye(4))
    np.testing.assert_allclose(uv, rc[:, ::-1] + 0.5, atol=1e-9)
    np.testing.assert_allclose(z, depth[rc[:, 0], rc[:, 1]])
    u, v = pixel_grid(6, 9)
    assert u[0, 0] == 0.5 and v[5, 8] == 5.5
    # ray length of the pixel whose centre is the principal point equals z
    K2 = make_K(50.0, 40.0, 3.5, 2.5)  # centre of pixel (row 2, col 3)
    assert ray_length_from_z_depth(depth, K2)[2, 3] == depth[2, 3]


def test_opencv_intrinsics_shift_by_half_a_pixel():
    # OpenCV: the centre of a 640x480 image is (319.5, 239.5); depthcli: (320, 240)
    K = K_from_opencv(525.0, 525.0, 319.5, 239.5)
    np.testing.assert_allclose(K, [[525, 0, 320], [0, 525, 240], [0, 0, 1]])
    # the OpenCV point (cx, cy) is the centre of pixel (239.5, 319.5) in OpenCV terms, i.e. the
    # image centre: under depthcli's convention the principal point is then at W/2, H/2
    uv, _ = project_points(np.array([[0.0, 0.0, 2.0]]), K, np.eye(4))
    np.testing.assert_allclose(uv[0], [640 / 2, 480 / 2])
