"""Render the package photos' reconstructions for the README: docs/<name>.png (photo + 3 angles).

    python bench/render_examples.py

The photos are the public-domain portraits that scikit-image (astronaut Eileen Collins) and
matplotlib (Grace Hopper) ship; nothing from the training data is shown.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from matplotlib.cbook import get_sample_data
from skimage.data import astronaut

import facevox
from facevox.preview import renders, save_png

DOCS = Path(__file__).resolve().parents[1] / "docs"


def photo_panel(image: np.ndarray, face: facevox.Face, size: int) -> np.ndarray:
    """The face's region of the photo with its landmarks, resized to size × size."""
    x0, y0, x1, y1 = face.box
    side = 1.5 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = size / side
    matrix = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]])
    panel = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderValue=(244, 244, 244))
    for x, y in face.landmarks_2d:
        cv2.circle(panel, (int(round(scale * x + matrix[0, 2])), int(round(scale * y + matrix[1, 2]))), 2, (60, 220, 90), -1, cv2.LINE_AA)
    return panel


def sheet(image: np.ndarray, face: facevox.Face, size: int = 320) -> np.ndarray:
    coloured, grey = zip(*(renders(face.mesh, size, yaw) for yaw in (0, 40, 75)))
    top = [photo_panel(image, face, size), *coloured]
    bottom = [np.full((size, size, 3), 244, np.uint8), *grey]
    return np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0)


def main():
    photos = {
        "astronaut": astronaut(),
        "grace_hopper": cv2.imread(get_sample_data("grace_hopper.jpg", asfileobj=False))[:, :, ::-1],
    }
    reconstructor = facevox.Reconstructor()
    for name, image in photos.items():
        face = reconstructor(image, all_faces=False)[0]
        path = DOCS / f"{name}.png"
        path.write_bytes(save_png(sheet(image, face)))
        print(f"{path}: yaw {face.yaw:.0f}°, pitch {face.pitch:.0f}°, roll {face.roll:.0f}°, {len(face.mesh.triangles)} triangles")


if __name__ == "__main__":
    main()
