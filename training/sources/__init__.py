"""Sample sources: each yields batches of (crop image, 3D face in crop coordinates) for training.

A source has `sample(batch_size: int, seed: int) -> Batch`. The synthetic Surrey-model renderer is
one; real photos with fitted meshes plug in as another without touching voxels, net or loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Batch:
    """A batch of training samples, all in crop pixels (x right, y down, depth k away from camera).

    image (b, 3, s, s) in [0, 1]; depth (b, s, s), +inf off the face; mask (b, s, s) bool;
    landmarks (b, 68, 3) as (x, y, k), hidden ones included; pose (b, 3) yaw, pitch, roll degrees;
    vertices (b, n, 3) the full mesh (for evaluation).
    """

    image: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    landmarks: torch.Tensor
    pose: torch.Tensor
    vertices: torch.Tensor


class SampleSource(Protocol):
    def sample(self, batch_size: int, seed: int) -> Batch: ...
