"""Large JPEGs decoded smaller against decoded in full: how far the faces move.

    PYTHONPATH=src:. python bench/large_jpeg.py [--out bench/results/large_jpeg.json]

facevox decodes a JPEG larger than 1,280 pixels at 1/2 to 1/8 of its size (`Reconstructor.find_faces`).
Here each photo of bench/speed.py that is that large (the 12-megapixel one and the group photo), and
the group photo at twice its size, goes through the Reconstructor twice: as JPEG bytes (decoded
smaller) and as the same JPEG decoded in full (an array). For each face (matched by its box centre):
the landmarks' mean and largest distance, and their mean offset (x, y), in % of the eye distance; the
mean colour's change; and the seconds per photo of each way (median of 5, after a first call).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]


def photos() -> dict[str, np.ndarray]:
    from bench.speed import group_photo, phone_photo

    group = group_photo()
    double = np.asarray(Image.fromarray(group).resize((2 * group.shape[1], 2 * group.shape[0]), Image.LANCZOS))
    return {"phone_photo_12mp": phone_photo(), "group_10_faces": group, "group_10_faces_x2": double}


def timed(step, runs: int = 5):
    step()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        result = step()
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "large_jpeg.json")
    args = parser.parse_args()

    import facevox
    from facevox.image import load_image

    reconstructor = facevox.Reconstructor()
    results = []
    for name, pixels in photos().items():
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=92)
        data = buffer.getvalue()
        full = load_image(data)
        smaller, smaller_s = timed(lambda: reconstructor(data))
        whole, whole_s = timed(lambda: reconstructor(load_image(data)))
        faces = []
        for face in whole:
            centre = face.box.reshape(2, 2).mean(0)
            match = min(smaller, key=lambda f: np.linalg.norm(f.box.reshape(2, 2).mean(0) - centre))
            eyes = np.linalg.norm(face.landmarks_2d[36:42].mean(0) - face.landmarks_2d[42:48].mean(0))
            moved = match.landmarks_2d - face.landmarks_2d
            distance = np.linalg.norm(moved, axis=1)
            faces.append({"eye_distance_px": round(float(eyes), 1),
                          "landmarks_moved_mean_percent": round(float(100 * distance.mean() / eyes), 2),
                          "landmarks_moved_max_percent": round(float(100 * distance.max() / eyes), 2),
                          "landmarks_offset_percent": np.round(100 * moved.mean(0) / eyes, 2).tolist(),
                          "mean_colour_change": np.round(match.mesh.colours.mean(0) - face.mesh.colours.mean(0), 2).tolist()})
        results.append({"photo": name, "pixels": f"{full.shape[1]}x{full.shape[0]}", "faces": len(whole),
                        "faces_decoded_smaller": len(smaller), "seconds_decoded_smaller": round(smaller_s, 4),
                        "seconds_decoded_in_full": round(whole_s, 4), "per_face": faces})
        print(name, len(whole), round(smaller_s, 3), round(whole_s, 3),
              max(f["landmarks_moved_mean_percent"] for f in faces), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"what": __doc__.splitlines()[0], "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
