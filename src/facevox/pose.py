"""Head pose: rotation matrices and yaw/pitch/roll angles, one convention for training and runtime.

Model frame (the Surrey Face Model's): x towards image right for a frontal face, y up, z out of the
face towards the camera. A head pose is R = Rz(roll) · Rx(pitch) · Ry(yaw) applied to model points.
Positive yaw turns the nose towards image right, positive pitch turns it up, positive roll tilts the
top of the head towards image right (clockwise on screen). Angles are in degrees.
"""

from __future__ import annotations

import numpy as np


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, cp, cr = np.cos(np.radians([yaw, pitch, roll]))
    sy, sp, sr = np.sin(np.radians([yaw, pitch, roll]))
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    rz = np.array([[cr, sr, 0], [-sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a rotation made by `rotation_matrix`."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = np.arctan2(-r[2, 0], r[2, 2])
    pitch = np.arcsin(np.clip(-r[2, 1], -1.0, 1.0))
    roll = np.arctan2(r[0, 1], r[1, 1])
    return tuple(float(v) for v in np.degrees([yaw, pitch, roll]))


def fit_rotation(model_points: np.ndarray, observed_points: np.ndarray) -> np.ndarray:
    """Rotation R (Kabsch) that best maps centred model points onto centred observed points.

    Both are (n, 3) in the model frame's axes (convert crop/photo points first: y and z flipped).
    """
    a = model_points - model_points.mean(axis=0)
    b = observed_points - observed_points.mean(axis=0)
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def head_pose(landmarks_3d: np.ndarray, mean_landmarks_3d: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) of 68 landmarks in the photo/crop frame (x right, y down, z away)
    against the mean face's landmarks in the model frame."""
    observed = np.asarray(landmarks_3d, dtype=np.float64) * np.array([1.0, -1.0, -1.0])
    return angles(fit_rotation(np.asarray(mean_landmarks_3d, dtype=np.float64), observed))
