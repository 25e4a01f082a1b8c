"""Faces per second of `facevox batch` on this machine: the local engine and the Ray engine on the same
200 photos (flips, rescales and crops of the two sample photos, see tests/photos.py), in one run
(local, ray, ray, local).

    python bench/batch_throughput.py      # needs the cluster extra; writes bench/results/batch_throughput.json

Wall-clock rates depend on what else the machine runs: the load average before and after each engine
is recorded with them. cpu_seconds_per_face (worker CPU time, from the index) depends on it less.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from photos import make_photos  # noqa: E402

COUNT = 200
ORDER = ("local", "ray", "ray", "local")  # ABBA: a drift in the machine's load falls on both engines alike


def measure(engine: str, keys: list[str], root: str, out: str) -> dict:
    import pyarrow.compute as pc

    from facevox.batch import Options, plan, run
    from facevox.batch.index import read_index
    from facevox.batch.store import open_store

    options = Options(out=out, root=root)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    pending, _, _ = plan(keys, options)
    processed = sum(len(records) for records in run(pending, options, engine, workers=os.cpu_count()))
    seconds = time.perf_counter() - start
    index = read_index(open_store(out))
    faces = pc.sum(index["faces"]).as_py()
    stages = {c.removeprefix("time_"): round(pc.mean(index[c]).as_py(), 4) for c in index.column_names if c.startswith("time_") and index[c].null_count < index.num_rows}
    return {
        "engine": engine, "photos": processed, "faces": faces, "done": pc.sum(pc.equal(index["status"], "done")).as_py(),
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
    import ray

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "photos"
        make_photos(folder, COUNT, bad=False)
        from facevox.batch import find_inputs

        keys, _, root = find_inputs([str(folder)])
        start = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
        ray_start = time.perf_counter() - start
        results = [measure(engine, keys, root, f"{scratch}/{n}-{engine}") for n, engine in enumerate(ORDER)]
        ray.shutdown()
    summary = {engine: {key: round(sum(r[key] for r in results if r["engine"] == engine) / ORDER.count(engine), 4)
                        for key in ("faces_per_second", "cpu_seconds_per_face", "worker_seconds_per_face")} for engine in ("local", "ray")}
    report = {
        "what": f"facevox batch on {COUNT} photos, glb+json per face; local = process pool, ray = Ray Data actor pool on a local Ray (num_cpus={os.cpu_count()}); "
                f"runs in the order {', '.join(ORDER)}; seconds include worker start-up (model loading), not ray.init ({ray_start:.1f} s)",
        "machine": {"cpus": os.cpu_count(), "processor": cpu_model(), "python": platform.python_version(),
                    "ray": ray.__version__},
        "mean_by_engine": summary,
        "results": results,
    }
    out = Path(__file__).parent / "results" / "batch_throughput.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
