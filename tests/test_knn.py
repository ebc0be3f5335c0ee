"""Exact k-nearest-neighbour distances (initial Gaussian sizes) against brute force."""

import numpy as np
import pytest

from depthcli.splat.knn import knn_sq_distances, rms_knn_distance


def brute(points, k):
    d2 = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)  # a point is not its own neighbour (its duplicates are)
    d2 = np.sort(d2, axis=1)[:, :k]
    return d2


def clouds():
    rng = np.random.default_rng(0)
    yield "uniform", rng.uniform(-1, 1, (700, 3))
    plane = rng.uniform(0, 4, (600, 3)) * [1, 1, 0] + [0, 0, 2.0]  # a surface: many points per cell
    yield "plane", plane
    wall = np.concatenate([plane, rng.uniform(0, 4, (300, 3)) * [1, 0, 1]])
    yield "room corner", wall
    dup = rng.normal(size=(200, 3))
    yield "duplicates", np.concatenate([dup, dup[:50]])
    far = np.concatenate([rng.normal(scale=0.01, size=(400, 3)), [[1e4, -3e3, 7e3], [-5e3, 1, 2]]])
    yield "outliers", far  # a tiny cluster and two points far away
    yield "line", np.linspace(0, 1, 300)[:, None] * [1.0, 2.0, -0.5]
    yield "tiny", rng.normal(size=(3, 3))


@pytest.mark.parametrize("name,points", list(clouds()), ids=[c[0] for c in clouds()])
@pytest.mark.parametrize("k", [1, 3])
def test_equals_brute_force(name, points, k):
    got = knn_sq_distances(points, k)
    ref = brute(points, k)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)


def test_too_few_points_pad_with_inf_and_rms_caps_k():
    pts = np.array([[0.0, 0, 0], [3.0, 4.0, 0]])
    assert knn_sq_distances(pts, 3).tolist() == [[25.0, np.inf, np.inf]] * 2
    assert rms_knn_distance(pts, 3).tolist() == [5.0, 5.0]
    assert np.isnan(rms_knn_distance(pts[:1], 3)).all()
    with pytest.raises(ValueError):
        knn_sq_distances(np.array([[0.0, np.nan, 0], [1, 1, 1]]), 1)


def test_rms_of_a_regular_grid_is_its_spacing():
    g = np.stack(np.meshgrid(*[np.arange(6) * 0.25] * 3, indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(rms_knn_distance(g, 3), 0.25, rtol=1e-12)  # every point has >= 3 axis neighbours
