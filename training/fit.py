"""Fit the Surrey Face Model to 2D landmarks: pose, identity and expression (the eos / 300W-LP way).

Camera: scaled orthographic. A model point X (model frame, mm) lands in the photo at
    (x, y, depth) = scale · F · R · X + (tx, ty, 0),   F = diag(1, −1, −1)
(x right, y down, depth away from the camera), with R = facevox.pose.rotation_matrix(yaw, pitch, roll).
Pose and shape are solved in turn, each a linear least-squares problem; shape coefficients carry
the model's own Gaussian prior (identity in standard deviations) and expression weights a ridge
prior. Landmarks are fixed model vertices, hidden ones included (facevox's 68-point convention:
the 3D points projected, as in 300W-LP), so no contour search is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from facevox.pose import angles
from training.sfm import SurreyModel

FLIP = np.array([1.0, -1.0, -1.0])


@dataclass
class Fit:
    identity: np.ndarray  # (63,) in standard deviations
    expression: np.ndarray  # (6,) blendshape weights
    rotation: np.ndarray  # (3, 3)
    scale: float  # photo pixels per millimetre
    translation: np.ndarray  # (2,) photo pixels
    error: float  # RMS landmark distance after fitting, photo pixels

    def vertices(self, model: SurreyModel) -> np.ndarray:
        """The fitted shape in the model frame (mm)."""
        return model.shape(self.identity, self.expression)

    def project(self, model: SurreyModel) -> np.ndarray:
        """The fitted shape in the photo frame: (n, 3) x, y, depth in photo pixels (depth relative)."""
        return project(self.vertices(model), self.rotation, self.scale, self.translation)

    @property
    def pose(self) -> tuple[float, float, float]:
        return angles(self.rotation)


def project(vertices: np.ndarray, rotation: np.ndarray, scale: float, translation: np.ndarray) -> np.ndarray:
    out = scale * (vertices @ rotation.T) * FLIP
    out[:, :2] += translation
    return out


def estimate_pose(model_points: np.ndarray, image_points: np.ndarray, weights: np.ndarray | None = None):
    """Scaled orthographic pose (rotation, scale, translation) from (n, 3) model and (n, 2) photo points."""
    w = np.ones(len(model_points)) if weights is None else weights
    design = np.column_stack([model_points, np.ones(len(model_points))]) * np.sqrt(w)[:, None]
    solution, *_ = np.linalg.lstsq(design, image_points * np.sqrt(w)[:, None], rcond=None)
    affine = solution[:3].T  # (2, 3): rows map to x and y
    rows = np.stack([affine[0], -affine[1]])  # undo F's y flip → first two rows of scale · R
    scale = float(np.linalg.norm(rows, axis=1).mean())
    u, _, vt = np.linalg.svd(rows / scale, full_matrices=False)
    top = u @ vt  # nearest pair of orthonormal rows
    rotation = np.vstack([top, np.cross(top[0], top[1])])
    residual = image_points - project(model_points, rotation, scale, np.zeros(2))[:, :2]
    translation = (residual * w[:, None]).sum(0) / w.sum()
    return rotation, scale, translation


def fit_landmarks(
    model: SurreyModel,
    vertex_ids: np.ndarray,
    points: np.ndarray,
    iterations: int = 8,
    noise: float | None = None,
    expression_prior: float = 1.0,
    weights: np.ndarray | None = None,
) -> Fit:
    """Fit the model to (n, 2) photo points that correspond to model vertices `vertex_ids`.

    noise: the landmarks' standard deviation in photo pixels (default 2 % of their box size); it
    balances the data against the priors. weights: per-landmark weights (default all 1).
    """
    points = np.asarray(points, dtype=np.float64)[:, :2]
    vertex_ids = np.array(vertex_ids, dtype=np.int64)
    w = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64)
    extent = np.ptp(points, axis=0)
    sigma = noise if noise is not None else 0.02 * float(np.sqrt(max(extent[0] * extent[1], 1e-6)))
    identity = np.zeros(model.shape_basis.shape[-1])
    expression = np.zeros(model.expression_basis.shape[-1])
    ids = vertex_ids
    for _ in range(iterations):
        shape = model.shape(identity, expression)
        rotation, scale, translation = estimate_pose(shape[ids], points, w)
        identity, expression = _solve_shape(model, ids, points, rotation, scale, translation, sigma, expression_prior, w)
    shape = model.shape(identity, expression)
    rotation, scale, translation = estimate_pose(shape[ids], points, w)
    error = float(np.sqrt(np.mean(np.sum((project(shape[ids], rotation, scale, translation)[:, :2] - points) ** 2, axis=1))))
    return Fit(identity, expression, rotation, scale, translation, error)


def _solve_shape(model, ids, points, rotation, scale, translation, sigma, expression_prior, w):
    """Identity (N(0, 1) prior) and expression (ridge prior, kept in [0, 1.5]) for a fixed pose."""
    camera = scale * (FLIP[:2, None] * rotation[:2])  # (2, 3)
    basis = np.concatenate([model.shape_basis[ids], model.expression_basis[ids]], axis=2)  # (n, 3, k)
    design = np.einsum("ij,njk->nik", camera, basis).reshape(-1, basis.shape[-1])  # (2n, k)
    target = (points - translation - model.mean[ids] @ camera.T).reshape(-1)
    row_weights = np.repeat(w, 2) / sigma**2
    k_id = model.shape_basis.shape[-1]
    prior = np.r_[np.ones(k_id), np.full(basis.shape[-1] - k_id, expression_prior)]
    lhs = design.T @ (design * row_weights[:, None]) + np.diag(prior)
    coefficients = np.linalg.solve(lhs, design.T @ (target * row_weights))
    return np.clip(coefficients[:k_id], -3, 3), np.clip(coefficients[k_id:], 0.0, 1.5)
