"""Landmarks: the network's 68 heatmaps → 2D points (crop pixels) and their depths."""

from __future__ import annotations

import numpy as np

from facevox.rules import RULES

# iBUG-68 index of each landmark's mirror image (0-based): jaw, brows, nose, eyes, outer and inner lips.
MIRROR_68 = np.array(RULES["mirror_68"])


def mirror_maps(maps):
    """(…, 68, H, W) per-landmark maps of a mirrored crop → those of the crop: each map mirrored back
    and given to its landmark's mirror image (numpy arrays or torch tensors)."""
    return maps[..., MIRROR_68, :, :].flip(-1) if hasattr(maps, "flip") else maps[..., MIRROR_68, :, ::-1]


def from_heatmaps(heatmaps: np.ndarray, landmark_depth: np.ndarray, input_size: int) -> np.ndarray:
    """(68, H, H) heatmaps and depth maps → (68, 3) points (x, y, k) in crop pixels.

    Each point is the peak cell refined by a weighted mean over its 3×3 neighbourhood; its depth is
    read from the depth map at that cell. Cell (i, j) is centred on crop point (s·j + (s−1)/2, s·i + (s−1)/2).
    """
    count, size, _ = heatmaps.shape
    stride = input_size / size
    flat = heatmaps.reshape(count, -1).argmax(axis=1)
    rows, cols = np.divmod(flat, size)
    points = np.empty((count, 3))
    for n, (i, j) in enumerate(zip(rows, cols)):
        i0, i1, j0, j1 = max(i - 1, 0), min(i + 2, size), max(j - 1, 0), min(j + 2, size)
        patch = np.clip(heatmaps[n, i0:i1, j0:j1], 0, None)
        total = patch.sum()
        if total > 0:
            ii, jj = np.mgrid[i0:i1, j0:j1]
            ci, cj = (patch * ii).sum() / total, (patch * jj).sum() / total
        else:
            ci, cj = float(i), float(j)
        points[n] = (stride * cj + (stride - 1) / 2, stride * ci + (stride - 1) / 2, landmark_depth[n, i, j])
    return points


def face_evidence(heatmaps: np.ndarray) -> float:
    """How surely the network sees a face in its crop: the mean over the 68 landmark heatmaps of each
    one's peak. On held-out photos' faces it was at least 0.52 (median 0.78), on renders up to 90° yaw
    at least 0.65, and on crops of face-free pictures at most 0.35 (`Settings.min_evidence`)."""
    return float(heatmaps.reshape(len(heatmaps), -1).max(axis=1).mean())
