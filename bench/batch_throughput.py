"""Faces per second of `facevox batch` on this machine: the local engine and the Ray engine on the same
200 photos (flips, rescales and crops of the two sample photos, see tests/photos.py), in one run
(local, ray, ray, local).

    python bench/batch_throughput.py      # needs the cluster extra; writes bench/results/batch_throughput.json

On a GPU machine: `--device cuda` runs the local engine's network there (one shared network process,
the default worker count), `--gpus-per-worker F` gives each Ray actor that share of a GPU (the
default actor count: 1 / F a GPU); `--photos DIR --count N` repeats DIR's photos (as symlinks) to N
inputs; `--order` picks the engines and their order; `--out` another result file.

Wall-clock rates depend on what else the machine runs: the load average before and after each engine
is recorded with them. cpu_seconds_per_face (worker CPU time, from the index) depends on it less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from gpu_throughput import inputs  # noqa: E402  (bench/ is this script's folder)

COUNT = 200
ORDER = "local,ray,ray,local"  # ABBA: a drift in the machine's load falls on both engines alike


def measure(engine: str, keys: list[str], root: str, out: str, device: str | None = None, gpus_per_worker: float = 0.0) -> dict:
    import pyarrow.compute as pc

    from facevox.batch import Options, plan, run
    from facevox.batch.index import read_index
    from facevox.batch.store import open_store

    options = Options(out=out, root=root)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    pending, _, _ = plan(keys, options)
    gpus = engine == "ray" and gpus_per_worker
    workers = None if (engine == "local" and device) or gpus else os.cpu_count()  # on a GPU: the command's default
    processed = sum(len(records) for records in run(pending, options, engine, workers=workers, device=device if engine == "local" else None,
                                                    gpus_per_worker=gpus_per_worker if gpus else 0.0))
    seconds = time.perf_counter() - start
    index = read_index(open_store(out))
    faces = pc.sum(index["faces"]).as_py()
    stages = {c.removeprefix("time_"): round(pc.mean(index[c]).as_py(), 4) for c in index.column_names if c.startswith("time_") and index[c].null_count < index.num_rows}
    return {
        "engine": engine, "device": device if engine == "local" else None, "gpus_per_worker": gpus_per_worker if gpus else None,
        "photos": processed, "faces": faces, "done": pc.sum(pc.equal(index["status"], "done")).as_py(),
        "seconds": round(seconds, 2), "faces_per_second": round(faces / seconds, 3), "photos_per_second": round(processed / seconds, 3),
        "cpu_seconds_per_face": round(pc.sum(index["cpu_seconds"]).as_py() / faces, 4),
        "worker_seconds_per_face": round(pc.sum(index["seconds"]).as_py() / faces, 4),
        "mean_stage_seconds_per_photo": stages, "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
    }


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", help="a folder of photos, repeated to --count inputs (default: made by tests/photos.py)")
    parser.add_argument("--count", type=int, default=COUNT)
    parser.add_argument("--order", default=ORDER, help="engines, comma-separated, in the order they run")
    parser.add_argument("--device", help="the local engine's network on this device (e.g. cuda)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="each Ray actor's share of a GPU")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "batch_throughput.json")
    args = parser.parse_args()
    order = args.order.split(",")
    import ray

    with tempfile.TemporaryDirectory() as scratch:
        keys, root = inputs(args.photos, args.count, Path(scratch))
        start = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
        ray_start = time.perf_counter() - start
        results = [measure(engine, keys, root, f"{scratch}/{n}-{engine}", args.device, args.gpus_per_worker)
                   for n, engine in enumerate(order)]
        ray.shutdown()
    summary = {engine: {key: round(sum(r[key] for r in results if r["engine"] == engine) / order.count(engine), 4)
                        for key in ("faces_per_second", "cpu_seconds_per_face", "worker_seconds_per_face")} for engine in dict.fromkeys(order)}
    photos = f"{args.count} inputs from {args.photos}" if args.photos else f"{args.count} photos"
    report = {
        "what": f"facevox batch on {photos}, glb+json per face; local = process pool, ray = Ray Data actor pool on a local Ray (num_cpus={os.cpu_count()}); "
                f"runs in the order {', '.join(order)}; seconds include worker start-up (model loading), not ray.init ({ray_start:.1f} s)",
        "machine": {"cpus": os.cpu_count(), "processor": cpu_model(), "python": platform.python_version(),
                    "ray": ray.__version__},
        "mean_by_engine": summary,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
