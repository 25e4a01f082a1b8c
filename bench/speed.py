"""Speed and memory of the whole pipeline on this machine's CPU (issue 3's benchmark).

    python bench/speed.py [--runs 20] [--threads 0]

Three photos: the astronaut portrait (one face), a 10-face group photo composed from the package
photos (astronaut and Grace Hopper, mirrored and rescaled), and a phone-camera-sized one (the
astronaut enlarged to 3000×3000 on a 4000×3000 grey frame, 12 megapixels). Each scenario runs in a fresh process:
load time (model + detectors) apart, then `--runs` reconstructions of the JPEG bytes, timed per
stage (decode, detect, network, mesh, colour, export to GLB); medians are reported, and the peak
resident memory of that process. Writes bench/results/speed.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"


def portrait() -> np.ndarray:
    """The astronaut, one face, 512×512."""
    from skimage.data import astronaut

    return astronaut()


def group_photo() -> np.ndarray:
    """Ten faces, two rows of five, each a different size, from the package portraits."""
    from matplotlib.cbook import get_sample_data
    from skimage.data import astronaut

    portraits = [astronaut()[20:260, 110:350], np.asarray(Image.open(get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))[0:400, 30:480]]
    canvas = np.full((900, 2250, 3), 235, np.uint8)
    for n in range(10):
        tile = portraits[n % 2][:, ::-1] if (n // 2) % 2 else portraits[n % 2]
        side = 330 + 40 * (n % 3)
        tile = np.asarray(Image.fromarray(tile).resize((side, side * tile.shape[0] // tile.shape[1])))
        row, col = divmod(n, 5)
        y, x = 20 + row * 440, 20 + col * 445
        h, w = min(tile.shape[0], 900 - y), min(tile.shape[1], 2250 - x)
        canvas[y : y + h, x : x + w] = tile[:h, :w]
    return canvas


def phone_photo() -> np.ndarray:
    """12 megapixels, as a phone camera takes them: the astronaut enlarged on a grey 4000×3000 frame."""
    from skimage.data import astronaut

    canvas = np.full((3000, 4000, 3), 128, np.uint8)
    canvas[:, 500:3500] = np.asarray(Image.fromarray(astronaut()).resize((3000, 3000), Image.LANCZOS))
    return canvas


PHOTOS = {"one_face": portrait, "group_10_faces": group_photo, "phone_photo_12mp": phone_photo}


def scenario(name: str, runs: int, threads: int) -> dict:
    """Runs in its own process: timings and peak memory of one photo."""
    import facevox
    from facevox.export import export

    image = PHOTOS[name]()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=92)
    data = buffer.getvalue()

    started = time.perf_counter()
    reconstructor = facevox.Reconstructor(threads=threads or None)
    load_s = time.perf_counter() - started
    reconstructor(data)  # first call: warms caches and thread pools
    stages, totals, faces = [], [], 0
    for _ in range(runs):
        started = time.perf_counter()
        found = reconstructor(data)
        timings = dict(reconstructor.timings)
        export_started = time.perf_counter()
        for face in found:
            export(face, "glb")
        timings["export"] = time.perf_counter() - export_started
        totals.append(time.perf_counter() - started)
        stages.append(timings)
        faces = len(found)
    median = {stage: statistics.median(t[stage] for t in stages) for stage in stages[0]}
    return {
        "photo": name, "pixels": f"{image.shape[1]}x{image.shape[0]}", "faces": faces, "runs": runs,
        "load_s": round(load_s, 3),
        "seconds_per_photo_median": round(statistics.median(totals), 4),
        "seconds_per_face_median": round(statistics.median(totals) / max(faces, 1), 4),
        "stage_seconds_median": {k: round(v, 4) for k, v in median.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: its default)")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(scenario(args.scenario, args.runs, args.threads)))
        return
    results = []
    for name in PHOTOS:
        command = [sys.executable, __file__, "--scenario", name, "--runs", str(args.runs), "--threads", str(args.threads)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(json.dumps(results[-1]))
    record = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
              "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
