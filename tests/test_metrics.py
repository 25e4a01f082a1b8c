"""Known-answer tests for bench/metrics.py (CPU, a few seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from bench import metrics


def rotation_about(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.deg2rad(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def grid_mesh(n=30, size=60.0, height=lambda x, y: 0.0 * x):
    """A height-field mesh z = height(x, y) over [0, size]², n × n vertices."""
    xs, ys = np.meshgrid(np.linspace(0, size, n), np.linspace(0, size, n))
    vertices = np.column_stack([xs.ravel(), ys.ravel(), height(xs, ys).ravel()])
    i = np.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).ravel()
    triangles = np.concatenate([np.column_stack([a, a + 1, a + n]), np.column_stack([a + 1, a + n + 1, a + n])])
    return vertices, triangles


def dome(x, y):
    return 40.0 - 0.01 * ((x - 30) ** 2 + (y - 30) ** 2)


def bumpy(x, y):
    """A dome with a nose-like bump and a brow ridge: no sliding symmetry, as a face."""
    return dome(x, y) - 8.0 * np.exp(-((x - 33) ** 2 + (y - 35) ** 2) / 40.0) - 3.0 * np.exp(-((y - 20) ** 2) / 10.0)


# ---- volumes ----


def test_identical_volumes_have_iou_one_and_disjoint_zero():
    rng = np.random.default_rng(0)
    volume = rng.random((10, 8, 8)) > 0.5
    assert metrics.volume_iou(volume, volume) == 1.0
    assert metrics.volume_iou(volume, ~volume) == 0.0


def test_half_overlap_iou():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[:, :, :2] = True
    b[:, :, 1:3] = True
    assert metrics.volume_iou(a, b) == pytest.approx(1 / 3)


def test_occupied_matches_training_occupancy():
    torch = pytest.importorskip("torch")
    from training.voxels import occupancy

    rng = np.random.default_rng(1)
    depth = rng.uniform(2, 18, (12, 12)).astype(np.float32)
    depth[3, 4] = 7.0  # a surface exactly on a voxel centre
    mask = rng.random((12, 12)) > 0.3
    reference = occupancy(torch.from_numpy(np.where(mask, depth, np.inf))[None], torch.from_numpy(mask)[None], 20)[0] > 0.5
    assert np.array_equal(metrics.occupied(depth, mask, 20), reference.numpy())


def test_shifted_iou_agrees_with_voxel_iou_and_finds_the_shift():
    rng = np.random.default_rng(2)
    depth = rng.uniform(20, 30, (16, 16))
    mask = np.zeros((16, 16), bool)
    mask[3:13, 2:14] = True
    target = metrics.occupied(depth, mask, 60)
    # Unshifted: equals the plain IoU.
    assert metrics.shifted_ious(target, depth, mask, [0.0])[0] == 1.0
    noisy = metrics.occupied(depth + rng.normal(0, 1, depth.shape), mask, 60)
    assert metrics.shifted_ious(noisy, depth, mask, [0.0])[0] == pytest.approx(metrics.volume_iou(noisy, target))
    # Any shift: equals the plain IoU against the moved target.
    for s in (-3.25, 1.5, 4.0):
        moved = metrics.occupied(depth + s, mask, 60)
        assert metrics.shifted_ious(noisy, depth, mask, [s])[0] == pytest.approx(metrics.volume_iou(noisy, moved))
    # A prediction 5 voxels too far away: IoU < 1 unshifted, 1 at the best shift, which is found.
    far = metrics.occupied(depth + 5, mask, 60)
    assert metrics.volume_iou(far, target) < 0.9
    iou, shift = metrics.best_shift_iou(far, depth, mask)
    assert iou == pytest.approx(1.0)
    assert shift == pytest.approx(5.0, abs=0.25)


# ---- landmarks ----


def test_nme_of_a_known_offset():
    rng = np.random.default_rng(3)
    truth = rng.uniform(0, 1, (68, 2)) * [80, 45]
    truth[0], truth[1] = (0, 0), (80, 45)  # box exactly 80 × 45
    shifted = truth + [3.0, 4.0]  # every point 5 px off
    assert metrics.nme(shifted, truth) == pytest.approx(5 / np.sqrt(80 * 45))
    assert metrics.nme(truth, truth) == 0.0


def test_nme_ignores_depth_and_interocular_uses_3d():
    truth = np.zeros((68, 3))
    truth[:, :2] = np.random.default_rng(4).uniform(0, 50, (68, 2))
    deeper = truth + [0, 0, 10]
    assert metrics.nme(deeper, truth) == 0.0
    truth[36], truth[45] = (0, 0, 0), (3, 0, 4)
    assert metrics.interocular(truth) == pytest.approx(5.0)


# ---- visibility ----


def test_visible_vertices_depth_test():
    zbuffer = np.full((10, 10), np.inf)
    zbuffer[2:8, 2:8] = 5.0
    vertices = np.array([
        [4.0, 4.0, 5.0],  # on the surface
        [4.2, 3.8, 6.4],  # within tolerance behind
        [4.0, 4.0, 7.0],  # hidden behind the surface
        [0.0, 0.0, 1.0],  # over an empty pixel
        [12.0, 4.0, 0.0],  # outside the image
        [-0.6, 4.0, 0.0],  # rounds to column −1
    ])
    assert metrics.visible_vertices(vertices, zbuffer, 1.5).tolist() == [True, True, False, False, False, False]


# ---- point-to-mesh distance ----


def brute_force_distance(points, vertices, triangles):
    corners = vertices[triangles]
    out = []
    for p in points:
        near = metrics.closest_on_triangles(np.repeat(p[None], len(triangles), 0), corners[:, 0], corners[:, 1], corners[:, 2])
        out.append(np.linalg.norm(near - p, axis=1).min())
    return np.array(out)


def test_closest_point_on_a_triangle_regions():
    a, b, c = np.array([0.0, 0, 0]), np.array([4.0, 0, 0]), np.array([0.0, 4, 0])
    points = np.array([[1, 1, 3], [-1, -1, 0], [6, -1, 0], [-1, 6, 0], [2, -2, 1], [-2, 2, 0], [3, 3, 0]], float)
    expected = np.array([[1, 1, 0], [0, 0, 0], [4, 0, 0], [0, 4, 0], [2, 0, 0], [0, 2, 0], [2, 2, 0]], float)
    n = len(points)
    got = metrics.closest_on_triangles(points, np.tile(a, (n, 1)), np.tile(b, (n, 1)), np.tile(c, (n, 1)))
    assert np.allclose(got, expected)


def test_degenerate_triangle_falls_back_to_segment():
    a, b, c = np.array([[0.0, 0, 0]]), np.array([[2.0, 0, 0]]), np.array([[4.0, 0, 0]])
    got = metrics.closest_on_triangles(np.array([[3.0, 1.0, 0]]), a, b, c)
    assert np.allclose(got, [[3.0, 0, 0]])


def test_surface_closest_matches_brute_force():
    vertices, triangles = grid_mesh(25, 60.0, dome)
    rng = np.random.default_rng(5)
    points = np.column_stack([rng.uniform(-10, 70, (300, 2)), rng.uniform(0, 50, 300)])
    _, dist = metrics.Surface(vertices, triangles).closest(points)
    assert np.allclose(dist, brute_force_distance(points, vertices, triangles), atol=1e-9)


def test_points_on_a_plane_mesh_have_known_distance():
    vertices, triangles = grid_mesh(10, 60.0)
    points = np.array([[10.0, 20.0, 2.5], [33.3, 7.7, -1.0], [70.0, 30.0, 0.0]])
    _, dist = metrics.Surface(vertices, triangles).closest(points)
    assert np.allclose(dist, [2.5, 1.0, 10.0])


# ---- rigid alignment ----


def test_rigid_fit_recovers_a_transform():
    rng = np.random.default_rng(6)
    source = rng.normal(0, 10, (50, 3))
    rotation, translation = rotation_about([1, 2, 3], 25), np.array([3.0, -2.0, 7.0])
    r, t = metrics.rigid_fit(source, source @ rotation.T + translation)
    assert np.allclose(r, rotation) and np.allclose(t, translation)
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_icp_undoes_a_small_rigid_motion():
    vertices, triangles = grid_mesh(40, 60.0, bumpy)
    surface = metrics.Surface(vertices, triangles)
    points = vertices[::3]
    centre = points.mean(0)
    moved = (points - centre) @ rotation_about([0.3, 1, 0.2], 4).T + centre + [1.0, -1.5, 2.0]
    _, before = surface.closest(moved)
    alignment = metrics.icp(moved, surface)
    assert before.mean() > 1.0
    assert alignment.distances.mean() < 0.01
    assert metrics.dense_error(moved, vertices, triangles, scale=60.0) < 0.01 / 60


def test_dense_error_measures_a_real_difference():
    # A flatter dome cannot be rigidly moved onto the true one: the error stays well above zero.
    truth, triangles = grid_mesh(30, 60.0, dome)
    flat, _ = grid_mesh(30, 60.0, lambda x, y: 40.0 - 0.005 * ((x - 30) ** 2 + (y - 30) ** 2))
    error = metrics.dense_error(truth, flat, triangles, scale=1.0)
    assert 0.5 < error < 4.5  # the sag differs by up to 4.5 at the corners


def test_icp_ignores_points_with_no_surface_near_them():
    vertices, triangles = grid_mesh(40, 60.0, bumpy)
    surface = metrics.Surface(vertices, triangles)
    points = vertices[::3]
    centre = points.mean(0)
    rotation, shift = rotation_about([1, 0.2, 0], 3), np.array([0.5, 1.0, -1.5])
    strays = np.column_stack([np.full(20, 90.0), np.linspace(0, 60, 20), np.full(20, 10.0)])  # far off the edge
    moved = (np.vstack([points, strays]) - centre) @ rotation.T + centre + shift
    alignment = metrics.icp(moved, surface)
    assert len(strays) < 0.1 * len(moved)
    assert alignment.distances[: len(points)].mean() < 0.01
