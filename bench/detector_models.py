"""How often each of MediaPipe's two face detectors finds a face, and its CPU time (issue 7).

    PYTHONPATH=src:. python bench/detector_models.py [--data ../shared/data] [--photos DIR] [--out FILE]

On the held-out real photos (the `val` splits of real-faces and celeb-faces, as bench/accuracy_real.py
uses them) and, with --photos, a folder of other photos (e.g. those tests/photos.py makes): each photo
shrunk as facevox.faces.detect_faces does and cut into its tiles, then each model (short range, full
range) run on every tile. Counts the photos where each finds at least one face, where either does, and
the faces found; CPU ms a photo (time.process_time, OpenMP/BLAS/OpenCV on one thread as the batch
workers run). Writes bench/results/detector_models.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
    os.environ.setdefault(name, "1")

import numpy as np  # noqa: E402

MODELS = ("short_range", "full_range")  # the order of MediaPipeDetector's models


def measure(detector, files: list[Path]) -> dict:
    from facevox.errors import FacevoxError
    from facevox.faces import DETECT_SIDE, shrink, square_tiles
    from facevox.image import load_image

    found, faces, seconds = {m: 0 for m in MODELS}, {m: 0 for m in MODELS}, {m: 0.0 for m in MODELS}
    either = photos = 0
    for file in files:
        try:
            image, _ = shrink(load_image(str(file)), DETECT_SIDE)
        except FacevoxError:
            continue
        photos += 1
        tiles = [np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in square_tiles(image.shape[1], image.shape[0])]
        counts = {}
        for name, model in zip(MODELS, detector._models):
            start = time.process_time()
            counts[name] = sum(len(detector._run(model, tile)) for tile in tiles)
            seconds[name] += time.process_time() - start
            found[name] += counts[name] > 0
            faces[name] += counts[name]
        either += any(counts.values())
    return {"photos": photos, "photos_with_a_face": found | {"either": either}, "faces_found": faces,
            "cpu_ms_per_photo": {m: round(seconds[m] / max(photos, 1) * 1e3, 2) for m in MODELS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="holds real-faces/ and celeb-faces/")
    parser.add_argument("--photos", type=Path, help="another folder of photos, searched recursively")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "detector_models.json")
    args = parser.parse_args()

    from facevox.faces import MediaPipeDetector
    from training.splits import celeb_faces, real_faces

    detector = MediaPipeDetector()
    sets = {"real-faces": real_faces(args.data / "real-faces", "val"), "celeb-faces": celeb_faces(args.data / "celeb-faces", "val")}
    if args.photos:
        sets[str(args.photos)] = sorted(p for p in args.photos.rglob("*") if p.is_file())
    results = {name: measure(detector, files) for name, files in sets.items()}
    for name, result in results.items():
        print(name, json.dumps(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "photos where each MediaPipe face detector finds a face, and its CPU time, on every tile (bench/detector_models.py)",
        "machine": {"cpus": os.cpu_count(), "processor": platform.machine(), "python": platform.python_version()},
        "results": results}, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
