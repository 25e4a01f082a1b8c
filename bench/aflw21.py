"""AFLW's 21 landmarks from a system's 68 iBUG landmarks in 3D (photo frame: x right, y down, z away).

AFLW's points, in order, by the subject's own sides (bench/accuracy_aflw.py's data): 1–3 right brow
(outer, centre, inner), 4–6 left brow (inner, centre, outer), 7–9 right eye (outer corner, centre,
inner corner), 10–12 left eye (inner, centre, outer), 13 right ear lobe, 14 nose's right side, 15 nose
tip, 16 nose's left side, 17 left ear lobe, 18 right mouth corner, 19 mouth centre, 20 left mouth
corner, 21 chin centre.

Where they come from (`FROM_68`, `FROM_HEAD`; 1-based iBUG numbers here):
* the same point of the 68: brow ends 18, 22, 23, 27; brow centres 20 and 25 (the middle of each
  brow's five points); eye corners 37, 40, 43, 46; nose tip 31; mouth corners 49, 55; chin 9;
* the mean of 68-points: eye centres = mean of each eye's six points (37–42, 43–48); mouth centre =
  mean of the inner lips' middle points 63 and 67;
* a fixed vertex of a mean head, for what the 68 lack: ear lobes and the nose's sides (the outermost
  points of the nostril wings). The head is the ICT FaceKit neutral head (../shared/data/ict-face, MIT
  licence); `MeanHead.from_ict` picks the vertices by a rule (see there). Per face, the head's 51 inner
  landmarks (iBUG 18–68) are aligned to the system's 3D points by a similarity transform (rotation,
  scale, translation; least squares), and the head's vertex goes where that transform puts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ICT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ict-face" / "model.npz"

# AFLW point (0-based) → the 0-based iBUG-68 points whose mean it is.
FROM_68 = {0: [17], 1: [19], 2: [21], 3: [22], 4: [24], 5: [26], 6: [36], 7: list(range(36, 42)), 8: [39],
           9: [42], 10: list(range(42, 48)), 11: [45], 14: [30], 17: [48], 18: [62, 66], 19: [54], 20: [8]}
# AFLW point (0-based) → row of MeanHead.extra.
FROM_HEAD = {12: 0, 13: 2, 15: 3, 16: 1}
HEAD_POINTS = ("right ear lobe", "left ear lobe", "nose right side", "nose left side")
# The mirror image of each AFLW point (0-based): the subject's right and left swapped.
MIRROR_21 = np.array([5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20])
INNER = slice(17, 68)  # iBUG 18–68: brows, nose, eyes, mouth
FLIP = np.array([1.0, -1.0, -1.0])  # photo frame ↔ model frame axes (x right, y up, z towards the camera)


@dataclass
class MeanHead:
    """A mean head in the model frame: its 68 iBUG landmarks and the `HEAD_POINTS` (4, 3)."""

    landmarks: np.ndarray  # (68, 3)
    extra: np.ndarray  # (4, 3)

    @classmethod
    def from_ict(cls, path: Path = ICT) -> "MeanHead":
        """The ICT neutral head (cm; x to the subject's left, which is image right in a frontal view, as
        facevox's model frame). Vertices of the face part (ids < 9409) only:
        ear lobe: the lowest vertex of the ear, the ear being the vertices more than 3 mm further out
            (|x|) than the jaw landmark on that side (iBUG 1 / 17, which sit in front of the ear);
        nose side: the outermost (|x|) vertex of the nostril wing, the wing being the vertices between
            the heights of iBUG 32 and the nose tip (31) that lie no more than 4 mm behind iBUG 32's depth.
        """
        with np.load(path) as model:
            vertices = model["neutral"][:9409].astype(np.float64)
            landmarks = vertices[model["landmarks68"]]
        extra = [vertices[i] for i in head_vertex_ids(vertices, landmarks)]
        return cls(landmarks, np.stack(extra))


def head_vertex_ids(vertices: np.ndarray, landmarks: np.ndarray) -> list[int]:
    """Vertex ids of the right and left ear lobes and the nose's right and left sides (`from_ict`'s rule)."""
    x, y, z = vertices.T
    ids = []
    for side, jaw in ((-1, 0), (1, 16)):  # subject's right is image left: x < 0
        ear = np.flatnonzero(side * x > side * landmarks[jaw, 0] + 0.3)
        ids.append(int(ear[np.argmin(y[ear])]))
    tip, base = landmarks[30], landmarks[31]
    for side in (-1, 1):
        wing = np.flatnonzero((y >= base[1]) & (y <= tip[1]) & (z >= base[2] - 0.4) & (side * x > 0))
        ids.append(int(wing[np.argmax(side * x[wing])]))
    return ids


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares scale s, rotation R (det +1), translation t with target ≈ s · source @ R.T + t (Umeyama)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, singular, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(singular) @ d) / (a**2).sum())
    return scale, rotation, mu_t - scale * mu_s @ rotation.T


def aflw21(landmarks_3d: np.ndarray, head: MeanHead) -> np.ndarray:
    """(68, 3) landmarks in the photo frame → AFLW's (21, 2) points in photo pixels."""
    landmarks_3d = np.asarray(landmarks_3d, np.float64)
    out = np.empty((21, 2))
    for point, rows in FROM_68.items():
        out[point] = landmarks_3d[rows, :2].mean(0)
    scale, rotation, translation = similarity(head.landmarks[INNER], landmarks_3d[INNER] * FLIP)
    placed = (scale * head.extra @ rotation.T + translation) * FLIP
    for point, row in FROM_HEAD.items():
        out[point] = placed[row, :2]
    return out
