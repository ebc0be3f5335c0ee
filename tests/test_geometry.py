import numpy as np

from depthcli.geometry import invert_rigid, project_points, scale_K, splat_sparse_depth


def _random_pose(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    R = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = rng.normal(size=3)
    return T


def test_invert_rigid_matches_numpy_inverse():
    T = _random_pose(np.random.default_rng(1))
    np.testing.assert_allclose(invert_rigid(T), np.linalg.inv(T), atol=1e-12)


def test_project_points_hand_values():
    K = np.array([[100.0, 0, 50], [0, 200.0, 40], [0, 0, 1]])
    uv, z = project_points(np.array([[1.0, -0.5, 2.0], [0, 0, -1.0]]), K, np.eye(4))
    # u = 100 * 1/2 + 50 = 100, v = 200 * -0.25 + 40 = -10
    np.testing.assert_allclose(uv[0], [100.0, -10.0])
    assert z.tolist() == [2.0, -1.0]
    assert np.isnan(uv[1]).all()


def test_scale_K_keeps_pixel_centre_convention():
    # A point at the centre of pixel (row 1, col 1) of a 4x4 image is the centre
    # of the 2x2 block; after 2x downscale it is the corner between pixels -> u = 1.0.
    K = np.array([[10.0, 0, 2.0], [0, 10.0, 2.0], [0, 0, 1]])
    K2 = scale_K(K, 0.5)
    uv, _ = project_points(np.array([[0.0, 0.0, 1.0]]), K2, np.eye(4))
    np.testing.assert_allclose(uv[0], [1.0, 1.0])


def test_splat_sparse_depth_nearest_wins():
    uv = np.array([[1.2, 0.7], [1.9, 0.1], [0.5, 0.5], [5.0, 0.5], [0.2, 1.5]])
    z = np.array([3.0, 2.0, 1.0, 1.0, -1.0])
    depth, index = splat_sparse_depth(uv, z, 2, 3)
    # Points 0 and 1 share pixel (0, 1): the nearer (z=2, index 1) wins.
    assert depth[0, 1] == 2.0 and index[0, 1] == 1
    assert depth[0, 0] == 1.0 and index[0, 0] == 2
    # Point 3 is outside (col 5 >= 3), point 4 is behind the camera.
    assert (depth > 0).sum() == 2
    assert index[1, 0] == -1


def test_quaternion_rotation_round_trip_and_hand_value():
    from depthcli.geometry import quaternion_from_rotation, rotation_from_quaternion

    # 90 degrees about z: (w, x, y, z) = (cos 45, 0, 0, sin 45) maps x -> y.
    R = rotation_from_quaternion([np.sqrt(0.5), 0, 0, np.sqrt(0.5)])
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    rng = np.random.default_rng(3)
    for _ in range(20):
        T = _random_pose(rng)  # random rotation built in this file
        q = quaternion_from_rotation(T[:3, :3])
        assert q[0] >= 0
        np.testing.assert_allclose(rotation_from_quaternion(q), T[:3, :3], atol=1e-12)
