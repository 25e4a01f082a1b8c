"""The Surrey Face Model (eos/cereal binary files) as plain numpy arrays.

Files live in ../shared/data/sfm/ beside the checkout (or wherever `FACEVOX_SFM` points); they are
never copied into the repository. Licence: non-commercial use only.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sfm"


def sfm_dir() -> Path:
    return Path(os.environ.get("FACEVOX_SFM", DEFAULT_DIR))


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def u32(self) -> int:
        (value,) = struct.unpack_from("<I", self.data, self.offset)
        self.offset += 4
        return value

    def u64(self) -> int:
        (value,) = struct.unpack_from("<Q", self.data, self.offset)
        self.offset += 8
        return value

    def matrix(self) -> np.ndarray:
        """An Eigen float matrix: rows, cols (uint32), then column-major data."""
        rows, cols = self.u32(), self.u32()
        values = np.frombuffer(self.data, np.float32, rows * cols, self.offset)
        self.offset += 4 * rows * cols
        return values.reshape(cols, rows).T.copy()

    def string(self) -> str:
        length = self.u64()
        text = self.data[self.offset : self.offset + length].decode()
        self.offset += length
        return text


@dataclass
class SurreyModel:
    """Shape PCA model + expression blendshapes, in millimetres (x right, y up, z to the viewer)."""

    mean: np.ndarray  # (n, 3)
    shape_basis: np.ndarray  # (n, 3, k): orthonormal components scaled by sqrt(eigenvalue)
    expression_basis: np.ndarray  # (n, 3, e): blendshape offsets
    expression_names: list[str]
    triangles: np.ndarray  # (m, 3) int64
    landmarks: np.ndarray  # (68,) vertex index of each iBUG-68 landmark

    def shape(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """Vertices (n, 3) for identity coefficients (in standard deviations) and blendshape weights."""
        return self.mean + self.shape_basis @ identity + self.expression_basis @ expression


def _ibug_map(text: str) -> dict[int, int]:
    pairs = re.findall(r"^\s*(\d+)\s*=\s*(\d+)", text, flags=re.M)
    return {int(ibug): int(vertex) for ibug, vertex in pairs}


def landmark_vertices(folder: Path, mean: np.ndarray) -> np.ndarray:
    """All 68 iBUG landmarks as vertices of the model.

    The file maps the chin and the 49 inner points; the undefined inner mouth corners 61 and 65 take
    the outer corners 49 and 55. The jaw points 1–8 and 10–17 are spaced evenly by arc length along
    the model's contour (from just below eye level down to the chin), each snapped to the nearest
    vertex, as iBUG annotators space them along the jaw line.
    """
    mapped = _ibug_map((folder / "ibug_to_sfm.txt").read_text())
    mapped[61], mapped[65] = mapped[49], mapped[55]
    contours = json.loads((folder / "sfm_model_contours.json").read_text())["model_contour"]
    chin = mean[mapped[9]]
    start_height = min(mean[mapped[37], 1], mean[mapped[46], 1]) - 5.0
    for side, numbers in (("right_contour", range(1, 9)), ("left_contour", range(17, 9, -1))):
        line = np.array([mean[v] for v in contours[side] if mean[v, 1] < start_height] + [chin])
        lengths = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(line, axis=0), axis=1))]
        for number, t in zip(numbers, np.linspace(0.0, lengths[-1], 9)):
            point = np.array([np.interp(t, lengths, line[:, axis]) for axis in range(3)])
            mapped[number] = int(np.argmin(np.linalg.norm(mean - point, axis=1)))
    return np.array([mapped[i] for i in range(1, 69)], dtype=np.int64)


ICT_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ict-face" / "model.npz"
JAW = range(0, 17)  # 0-based iBUG jaw points


def ict_landmarks_on_mean(model: SurreyModel, ict_path: Path | None = None) -> np.ndarray:
    """The ICT FaceKit head's 68 landmark vertices (a 3D convention: the jaw on the head's jaw line) in
    the mean face's frame (68, 3): the ICT neutral head aligned to the mean face by a similarity fit of
    the 51 inner landmarks (iBUG 18–68)."""
    with np.load(ict_path or os.environ.get("FACEVOX_ICT", ICT_DEFAULT)) as ict:
        head = ict["neutral"][ict["landmarks68"]].astype(np.float64)
    ours = model.mean[model.landmarks]
    source, target = head[17:] - head[17:].mean(0), ours[17:] - ours[17:].mean(0)
    u, singular, vt = np.linalg.svd(target.T @ source)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    scale = np.trace(np.diag(singular) @ d) / (source**2).sum()
    return scale * (head - head[17:].mean(0)) @ (u @ d @ vt).T + ours[17:].mean(0)


def ict_landmark_vertices(model: SurreyModel, points=JAW, ict_path: Path | None = None) -> np.ndarray:
    """The model's 68 landmark vertices with `points` (0-based iBUG indices; default the jaw) moved to
    the mean-face vertex nearest the ICT head's landmark (ict_landmarks_on_mean)."""
    aligned = ict_landmarks_on_mean(model, ict_path)
    out = model.landmarks.copy()
    for i in points:
        out[i] = int(np.argmin(np.linalg.norm(model.mean - aligned[i], axis=1)))
    return out


def contour_at_heights(model: SurreyModel, heights: np.ndarray, folder: Path | None = None) -> np.ndarray:
    """The model's 68 landmark vertices with the jaw points 1–8 and 10–17 moved along the model's
    contour (sfm_model_contours.json, down to the chin) to the given heights (17,) (mean face y, mm;
    the chin's entry is not used), each snapped to the nearest vertex; above the contour's top, its top."""
    folder = Path(folder or sfm_dir())
    contours = json.loads((folder / "sfm_model_contours.json").read_text())["model_contour"]
    mean, out = model.mean, model.landmarks.copy()
    for side, indices in (("right_contour", range(0, 8)), ("left_contour", range(16, 8, -1))):
        line = np.array([mean[v] for v in contours[side]] + [mean[model.landmarks[8]]])
        for i in indices:
            point = line[0]
            for a, b in zip(line[:-1], line[1:]):
                if (a[1] - heights[i]) * (b[1] - heights[i]) <= 0 and a[1] != b[1]:
                    point = a + (heights[i] - a[1]) / (b[1] - a[1]) * (b - a)
                    break
            out[i] = int(np.argmin(np.linalg.norm(mean - point, axis=1)))
    return out


LANDMARK_CONVENTIONS = ("contour", "ict-jaw", "contour-ict-heights", "ict-nose-bridge")
NOSE_BRIDGE = (27, 28)  # 0-based iBUG 28 and 29, the upper nose bridge


def load(folder: Path | None = None, landmarks: str = "contour") -> SurreyModel:
    """The model from `folder`; `landmarks` picks its 68 landmark vertices: "contour" (landmark_vertices:
    the jaw along the model's 2D-fitting contour, facevox's convention so far), "ict-jaw"
    (ict_landmark_vertices: the jaw where the ICT FaceKit head has its 3D jaw landmarks) or
    "contour-ict-heights" (contour_at_heights: the jaw still on the contour, at the ICT jaw landmarks' heights)
    or "ict-nose-bridge" (today's, with iBUG 28 and 29 where the ICT head has them)."""
    if landmarks not in LANDMARK_CONVENTIONS:
        raise ValueError(f"unknown landmark convention {landmarks!r}; one of {LANDMARK_CONVENTIONS}")
    folder = Path(folder or sfm_dir())
    reader = _Reader((folder / "sfm_shape_3448.bin").read_bytes())
    if reader.u32() != 1:
        raise ValueError("unsupported Surrey model file version")
    mean = reader.matrix()[:, 0]
    orthonormal = reader.matrix()
    eigenvalues = reader.matrix()[:, 0]
    count = reader.u64()
    triangles = np.frombuffer(reader.data, np.int32, count * 3, reader.offset).reshape(count, 3)
    n = mean.size // 3
    shape_basis = (orthonormal * np.sqrt(eigenvalues)).reshape(n, 3, -1)

    reader = _Reader((folder / "expression_blendshapes_3448.bin").read_bytes())
    names, offsets = [], []
    for _ in range(reader.u64()):
        names.append(reader.string())
        offsets.append(reader.matrix()[:, 0].reshape(n, 3))
    expression_basis = np.stack(offsets, axis=-1)

    mean = mean.reshape(n, 3).astype(np.float64)
    model = SurreyModel(
        mean=mean,
        shape_basis=shape_basis.astype(np.float64),
        expression_basis=expression_basis.astype(np.float64),
        expression_names=names,
        triangles=triangles.astype(np.int64),
        landmarks=landmark_vertices(folder, mean),
    )
    if landmarks == "ict-jaw":
        model.landmarks = ict_landmark_vertices(model)
    elif landmarks == "contour-ict-heights":
        model.landmarks = contour_at_heights(model, ict_landmarks_on_mean(model)[:17, 1], folder)
    elif landmarks == "ict-nose-bridge":
        model.landmarks = ict_landmark_vertices(model, NOSE_BRIDGE)
    return model
