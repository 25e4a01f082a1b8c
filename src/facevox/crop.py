"""The crop rule: from a face box in the photo to the square network input.

One rule serves training and inference. A *face box* is the tight box of the 68 iBUG landmarks
(x0, y0, x1, y1) in photo pixels, pixel centres at integer coordinates. Detectors whose boxes follow
another convention map theirs onto it first (see `faces.py`). Training draws the box from the
rendered face's landmarks and jitters it, so the network tolerates detector noise.
"""

from __future__ import annotations

import numpy as np

from facevox.image import reduction_for
from facevox.rules import RULES

CROP_SIZE = 192
CROP_SCALE = RULES["crop"]["scale"]  # crop side / max(face box width, height)
CROP_SHIFT_Y = RULES["crop"]["shift_y"]  # crop centre below the box centre, in box heights (negative: above; keeps the forehead in)


def crop_matrix(face_box, size: int = CROP_SIZE, zoom: float = 1.0) -> np.ndarray:
    """The 2×3 affine matrix that maps photo pixels to crop pixels for this face box (zoom > 1: a
    crop that much wider around the same centre)."""
    x0, y0, x1, y1 = (float(v) for v in face_box)
    width, height = x1 - x0, y1 - y0
    if not (width > 0 and height > 0):
        raise ValueError(f"empty face box {face_box!r}")
    side = CROP_SCALE * zoom * max(width, height)
    centre_x = 0.5 * (x0 + x1)
    centre_y = 0.5 * (y0 + y1) + CROP_SHIFT_Y * height
    scale = size / side
    # photo (centre_x, centre_y) -> crop ((size - 1) / 2, (size - 1) / 2)
    offset = (size - 1) / 2
    return np.array(
        [[scale, 0.0, offset - scale * centre_x], [0.0, scale, offset - scale * centre_y]]
    )


def reduction(face_box, size: int = CROP_SIZE) -> int:
    """The largest power of two up to 8 by which the photo may be shrunk with this face's crop still
    `size` pixels of it across (no crop enlarged)."""
    x0, y0, x1, y1 = (float(v) for v in face_box)
    return reduction_for(CROP_SCALE * max(x1 - x0, y1 - y0), size)


def chain(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2×3 affine matrix that applies `inner`, then `outer`."""
    combined = outer[:, :2] @ inner
    combined[:, 2] += outer[:, 2]
    return combined


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2×3 affine matrix."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to (n, 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def crop_image(image: np.ndarray, matrix: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Warp an (h, w, 3) uint8 photo into the (size, size, 3) crop, bilinear; outside the photo is black."""
    import cv2

    return cv2.warpAffine(image, np.asarray(matrix, np.float64), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
