"""Speed and memory of the whole pipeline on this machine's CPU, beside MediaPipe's face mesh.

    python bench/speed.py [--runs 20] [--threads 0] [--photos one_face,...] [--out bench/results/speed.json]

Three photos: the astronaut portrait (one face), a 10-face group photo composed from the package
photos (astronaut and Grace Hopper, mirrored and rescaled), and a phone-camera-sized one (the
astronaut enlarged to 3000×3000 on a 4000×3000 grey frame, 12 megapixels). Each scenario runs in a fresh process:
load time (model + detectors) apart, then `--runs` reconstructions of the JPEG bytes, timed per
stage (decode, detect, network, mesh, colour, export to GLB); medians are reported, and the peak
resident memory of that process. The `--preview` pictures (`contact_sheet` and PNG of each face) are
timed apart, outside the per-photo total. Wall and CPU seconds (process_time, all threads) are both
kept, with the machine's load average at the start and the end: on a shared machine the wall times
grow with the load.

The same photos then go, in their own processes, through MediaPipe's face mesh (the FaceMesh
solution of the installed mediapipe wheel: 468 landmarks a face, no dense mesh), from the same JPEG
bytes (decode included), so that the two can be compared as a ratio on whatever CPU runs this
(`facevox_seconds_ratio`, `facevox_cpu_seconds_ratio`: facevox's time over MediaPipe's, per photo).
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


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def scenario(name: str, runs: int, threads: int) -> dict:
    """Runs in its own process: timings and peak memory of one photo."""
    import facevox
    from facevox.export import export
    from facevox.preview import contact_sheet, save_png

    image = PHOTOS[name]()
    data = jpeg(image)

    started = time.perf_counter()
    reconstructor = facevox.Reconstructor(threads=threads or None)
    load_s = time.perf_counter() - started
    reconstructor(data)  # first call: warms caches and thread pools
    stages, totals, cpu_totals, previews, preview_cpu, faces = [], [], [], [], [], 0
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        found = reconstructor(data)
        timings = dict(reconstructor.timings)
        export_started = time.perf_counter()
        for face in found:
            export(face, "glb")
        timings["export"] = time.perf_counter() - export_started
        totals.append(time.perf_counter() - started)
        cpu_totals.append(time.process_time() - cpu_started)
        preview_started, preview_cpu_started = time.perf_counter(), time.process_time()
        for face in found:
            save_png(contact_sheet(face.mesh))
        previews.append(time.perf_counter() - preview_started)
        preview_cpu.append(time.process_time() - preview_cpu_started)
        stages.append(timings)
        faces = len(found)
    median = {stage: statistics.median(t[stage] for t in stages) for stage in stages[0]}
    return {
        "photo": name, "pixels": f"{image.shape[1]}x{image.shape[0]}", "faces": faces, "runs": runs,
        "load_s": round(load_s, 3),
        "seconds_per_photo_median": round(statistics.median(totals), 4),
        "seconds_per_face_median": round(statistics.median(totals) / max(faces, 1), 4),
        "cpu_seconds_per_photo_median": round(statistics.median(cpu_totals), 4),
        "stage_seconds_median": {k: round(v, 4) for k, v in median.items()},
        "preview_seconds_per_photo_median": round(statistics.median(previews), 4),
        "preview_cpu_seconds_per_photo_median": round(statistics.median(preview_cpu), 4),
        "peak_rss_mb": peak_rss_mb(),
    }


def mediapipe_scenario(name: str, runs: int) -> dict:
    """Runs in its own process: MediaPipe's face mesh on the same JPEG bytes, decode included."""
    import cv2
    import mediapipe

    data = jpeg(PHOTOS[name]())
    started = time.perf_counter()
    face_mesh = mediapipe.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=20)
    load_s = time.perf_counter() - started

    def run() -> int:
        image = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return len(face_mesh.process(image).multi_face_landmarks or [])

    run()  # first call: warms caches and thread pools
    totals, cpu_totals, faces = [], [], 0
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        faces = run()
        totals.append(time.perf_counter() - started)
        cpu_totals.append(time.process_time() - cpu_started)
    return {"photo": name, "faces": faces, "runs": runs, "load_s": round(load_s, 3),
            "seconds_per_photo_median": round(statistics.median(totals), 4),
            "cpu_seconds_per_photo_median": round(statistics.median(cpu_totals), 4), "peak_rss_mb": peak_rss_mb()}


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it (a VM may show only the family)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def run_scenario(*arguments: str) -> dict:
    command = [sys.executable, __file__, *arguments]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: its default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    parser.add_argument("--photos", default=",".join(PHOTOS), help=f"comma-separated, of {', '.join(PHOTOS)}")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--mediapipe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        result = mediapipe_scenario(args.scenario, args.runs) if args.mediapipe else scenario(args.scenario, args.runs, args.threads)
        print(json.dumps(result))
        return
    load_at_start = round(os.getloadavg()[0], 2)
    results, mediapipe_results = [], []
    for name in args.photos.split(","):
        results.append(run_scenario("--scenario", name, "--runs", str(args.runs), "--threads", str(args.threads)))
        print(json.dumps(results[-1]))
        mediapipe_results.append(run_scenario("--scenario", name, "--runs", str(args.runs), "--mediapipe"))
        for measure in ("seconds_per_photo_median", "cpu_seconds_per_photo_median"):
            ratio = results[-1][measure] / max(mediapipe_results[-1][measure], 1e-9)
            mediapipe_results[-1][f"facevox_{measure.replace('_per_photo_median', '')}_ratio"] = round(ratio, 1)
        print(json.dumps(mediapipe_results[-1]))
    load_at_end = round(os.getloadavg()[0], 2)
    record = {"machine": {"cpus": os.cpu_count(), "cpu": cpu_name(), "processor": platform.processor() or platform.machine(),
                          "python": platform.python_version(), "load_average_1_min": [load_at_start, load_at_end]},
              "results": results, "mediapipe_face_mesh": mediapipe_results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
