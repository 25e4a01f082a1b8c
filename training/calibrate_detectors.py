"""Measure each face detector's box convention against the network's own 68 landmarks.

    python -m training.calibrate_detectors [--photos ../shared/data/real-faces] [--count 300]

For training photos (never the held-out split), each detector's largest face is reconstructed (crop
refined from the network's landmarks); the landmarks' box against the detector's raw box gives
(scale_x, scale_y, shift_x, shift_y) of `facevox.faces.BoxConvention`. Prints the medians, to be
copied into facevox/faces.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facevox.api import Reconstructor
from facevox.faces import BoxConvention, HaarDetector, MediaPipeDetector, merge
from facevox.image import load_image
from training.splits import real_faces


def raw_boxes(detector, image):
    """The detector's own boxes (identity convention), best first, tagged with their kind."""
    detector.convention = BoxConvention()
    return merge(detector.detect(image))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "real-faces")
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    reconstructor = Reconstructor()
    measured: dict[str, list] = {}
    for path in real_faces(args.photos, "train")[: args.count]:
        image = load_image(path)
        for detector in (MediaPipeDetector(), HaarDetector()):
            found = raw_boxes(detector, image)
            if not found:
                continue
            detection = found[0]
            face = reconstructor.reconstruct_face(image, detection)
            (lx0, ly0), (lx1, ly1) = face.landmarks_2d.min(0), face.landmarks_2d.max(0)
            x0, y0, x1, y1 = detection.box
            w, h = x1 - x0, y1 - y0
            measured.setdefault(detection.detector, []).append(
                ((lx1 - lx0) / w, (ly1 - ly0) / h, ((lx0 + lx1) - (x0 + x1)) / 2 / w, ((ly0 + ly1) - (y0 + y1)) / 2 / h)
            )
    for kind, rows in measured.items():
        median = np.median(np.array(rows), axis=0)
        print(f"{kind}: {len(rows)} faces  BoxConvention(scale_x={median[0]:.3f}, scale_y={median[1]:.3f}, shift_x={median[2]:.3f}, shift_y={median[3]:.3f})")


if __name__ == "__main__":
    main()
