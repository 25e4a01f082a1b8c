"""Plain data that flows out of the pipeline: a reconstructed face and its mesh."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from facevox.head import Head


@dataclass
class Mesh:
    """A triangle mesh in the photo's frame: x right, y down (pixels), z away from the camera.

    vertices (n, 3) float64; triangles (m, 3) int64, wound so that normals face the camera;
    colours (n, 3) uint8 RGB sampled from the photo (or None).
    """

    vertices: np.ndarray
    triangles: np.ndarray
    colours: np.ndarray | None = None


@dataclass
class Face:
    """One face found in a photo and its 3D reconstruction.

    box: detector box (x0, y0, x1, y1) in photo pixels; score: detector confidence in [0, 1];
    landmarks_2d (68, 2) and landmarks_3d (68, 3) in the photo frame of `Mesh` (iBUG-68 order);
    yaw, pitch, roll in degrees (convention of `facevox.pose`); mesh: the volumetric surface of the
    visible face; head: the fitted ICT head (facevox.head.Head), when Settings(mesh=...) asked for it.
    """

    box: np.ndarray
    score: float
    landmarks_2d: np.ndarray
    landmarks_3d: np.ndarray
    yaw: float
    pitch: float
    roll: float
    mesh: Mesh
    extras: dict = field(default_factory=dict)
    head: Head | None = None
