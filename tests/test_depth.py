"""Depth conventions: disparity, normalisation, cut-off, back-projection."""

import numpy as np
import pytest

from depthcli.depth import (
    apply_far_cutoff,
    backproject_depth,
    depth_from_disparity,
    disparity_from_depth,
    normalize_min_max,
    ray_length_from_z_depth,
    sanitize_depth,
)


def test_disparity_from_depth_default_and_constant():
    depth = np.array([[2.0, 4.0], [0.0, np.nan]])
    # Hand values: 1/2, 1/4; invalid stays 0.
    assert disparity_from_depth(depth).tolist() == [[0.5, 0.25], [0.0, 0.0]]
    # TartanAir-style constant: 80 / depth.
    assert disparity_from_depth(depth, k=80.0)[0].tolist() == [40.0, 20.0]


def test_depth_disparity_round_trip():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 80, size=(7, 5))
    depth[0, 0] = 0
    back = depth_from_disparity(disparity_from_depth(depth, k=3.0), k=3.0)
    np.testing.assert_allclose(back, depth, rtol=1e-12)
    assert back[0, 0] == 0


def test_normalize_min_max_hand_values():
    x = np.array([[1.0, 3.0], [5.0, 100.0]])
    valid = np.array([[True, True], [True, False]])
    # min 1, max 5 over valid: (1-1)/4, (3-1)/4, (5-1)/4; invalid -> 0.
    assert normalize_min_max(x, valid).tolist() == [[0.0, 0.5], [1.0, 0.0]]
    assert normalize_min_max(np.full((2, 2), 7.0)).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert normalize_min_max(x, np.zeros_like(valid)).sum() == 0


def test_far_cutoff_and_sanitize():
    d = np.array([0.05, 1.0, 80.0, 80.5, np.inf, -1.0, np.nan], dtype=np.float32)
    assert sanitize_depth(d).tolist() == [0.05000000074505806, 1.0, 80.0, 80.5, 0.0, 0.0, 0.0]
    assert apply_far_cutoff(d, 80.0).tolist() == pytest.approx([0.05, 1.0, 80.0, 0, 0, 0, 0])
    assert apply_far_cutoff(d, 80.0, min_depth=0.1).tolist() == pytest.approx([0, 1.0, 80.0, 0, 0, 0, 0])


def test_backproject_hand_computed_pixel():
    K = np.array([[100.0, 0, 2.0], [0, 50.0, 1.0], [0, 0, 1]])
    depth = np.zeros((2, 4), np.float32)
    depth[1, 3] = 2.0  # pixel centre (3.5, 1.5)
    pts, pix = backproject_depth(depth, K)
    # x = (3.5 - 2) / 100 * 2 = 0.03, y = (1.5 - 1) / 50 * 2 = 0.02
    np.testing.assert_allclose(pts, [[0.03, 0.02, 2.0]])
    assert pix.tolist() == [[1, 3]]
    # World frame: camera translated by t means X_world = X_cam - t for R = I.
    cam_from_world = np.eye(4)
    cam_from_world[:3, 3] = [1.0, 2.0, 3.0]
    pts_w, _ = backproject_depth(depth, K, cam_from_world)
    np.testing.assert_allclose(pts_w, [[0.03 - 1, 0.02 - 2, 2.0 - 3]])


def test_ray_length_vs_z_depth():
    K = np.array([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]])
    depth = np.full((2, 2), 2.0)
    ray = ray_length_from_z_depth(depth, K)
    # Pixel (0,0) centre (0.5, 0.5) is the principal point: ray = z.
    assert ray[0, 0] == pytest.approx(2.0)
    # Pixel (1,1) centre (1.5,1.5): x = y = 1 -> ray = z * sqrt(3).
    assert ray[1, 1] == pytest.approx(2.0 * np.sqrt(3))
