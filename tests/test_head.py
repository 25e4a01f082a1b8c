"""The fitted head: recovery of a known ICT head, fixed topology, a texture without holes."""

import numpy as np
import pytest

from facevox import head
from facevox.pose import rotation_matrix

NARROW_FACE = 6706  # source vertices 0..6705: the narrow face area the network sees


def render_depth(vertices: np.ndarray, triangles: np.ndarray, size: int, steps: int = 6) -> np.ndarray:
    """Depth map (+inf off the mesh) of a mesh in pixel coordinates, by splatting each triangle's
    barycentric grid (dense enough for triangles of a few pixels)."""
    i, j = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1), indexing="ij")
    keep = i + j <= steps
    weights = np.stack([i[keep], j[keep], steps - i[keep] - j[keep]], 1) / steps
    points = np.einsum("sk,tkc->tsc", weights, vertices[triangles]).reshape(-1, 3)
    col, row = np.round(points[:, 0]).astype(int), np.round(points[:, 1]).astype(int)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    depth = np.full(size * size, np.inf)
    np.minimum.at(depth, row[inside] * size + col[inside], points[inside, 2])
    return depth.reshape(size, size)


def synthetic_face(model, seed: int, yaw: float = 20.0, size: int = 192):
    """A random ICT head placed in a crop-like frame, its 68 landmarks and the depth of its narrow face."""
    rng = np.random.default_rng(seed)
    identity = np.clip(rng.normal(0, 0.7, len(model.identity)), -2, 2)
    expression = np.zeros(len(model.expression))
    expression[rng.choice(len(expression), 3, replace=False)] = rng.uniform(0.2, 0.7, 3)
    rotation = np.diag([1.0, -1.0, -1.0]) @ rotation_matrix(yaw, 8.0, -5.0)
    truth = head.Fit(identity, expression, 0.9, rotation, np.array([96.0, 100.0, 100.0]))
    vertices = truth.place(model.shape(identity, expression).astype(np.float64))
    face_triangles = model.triangles[(model.vertex_source[model.triangles] < NARROW_FACE).all(1)]
    return truth, vertices, vertices[model.landmarks68], render_depth(vertices, face_triangles, size)


@pytest.mark.parametrize("seed,yaw", [(1, 0.0), (2, 25.0), (3, -50.0)])
def test_fit_recovers_a_known_head(seed, yaw):
    model = head.load_model()
    truth, vertices, landmarks, depth = synthetic_face(model, seed, yaw)
    fit = head.fit_surface(model, landmarks, depth)
    fitted = fit.place(model.shape(fit.identity, fit.expression).astype(np.float64))
    face = model.vertex_source < NARROW_FACE
    interocular = np.linalg.norm(landmarks[36] - landmarks[45])
    error = np.linalg.norm(fitted[face] - vertices[face], axis=1).mean() / interocular
    start = np.linalg.norm(model.shape(np.zeros(len(model.identity)), np.zeros(53)) * truth.scale @ truth.rotation.T + truth.translation - vertices, axis=1)[face].mean() / interocular
    print(f"error {error:.4f} of the interocular distance (mean head placed exactly: {start:.4f})")
    assert error < 0.03
    assert error < start / 2
