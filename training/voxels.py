"""VRN voxel targets: a depth map and face mask in crop pixels → a (D, H, W) occupancy volume.

A voxel (k, y, x) is full when it lies behind the visible face surface (k ≥ depth(y, x)) inside the
face's outline, so the volume is the face seen from the camera, filled to the back. Occupancy is the
fraction of the voxel's depth interval [k − ½, k + ½] behind the surface (a partial-volume target,
binary away from the surface), so marching cubes at 0.5 puts the surface at the depth itself.
"""

from __future__ import annotations

import torch


def occupancy(depth: torch.Tensor, mask: torch.Tensor, volume_depth: int) -> torch.Tensor:
    """(b, h, w) depth (voxel units) and bool mask → (b, volume_depth, h, w) occupancy in [0, 1]."""
    k = torch.arange(volume_depth, device=depth.device, dtype=torch.float32)[None, :, None, None]
    surface = torch.where(mask, depth, torch.full_like(depth, float("inf")))[:, None]
    return (k - surface + 0.5).clamp(0.0, 1.0)
