"""Memory of one `facevox batch --device` worker: what `facevox.batch.local.WORKER_MEMORY` rests on.

    PYTHONPATH=src:. python bench/worker_memory.py [--workers 4] [--count 40] [--out FILE]

Runs the local engine with the shared network process on the CPU (`device="cpu"`, the same worker
code as on a GPU) over --count photos made by tests/photos.py, and samples every 0.5 s the resident
(Rss) and proportional (Pss, shared pages split among their users) memory of this process's children
from /proc/PID/smaps_rollup (Linux). Reports the peaks of the workers (the processes the index names).
Writes bench/results/worker_memory.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def memory_mb(pid: int) -> dict[str, float] | None:
    """Rss and Pss of a process in MB, or None if it is gone."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    values = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in lines if line.startswith(("Rss:", "Pss:"))}
    return {"rss": values["Rss"], "pss": values["Pss"]}


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "worker_memory.json")
    args = parser.parse_args()

    from facevox.batch import Options, find_inputs, plan, run
    from photos import make_photos

    peaks: dict[int, dict[str, float]] = {}
    done = threading.Event()

    def sample():
        while not done.wait(0.5):
            for pid in children(os.getpid()):
                now = memory_mb(pid)
                if now:
                    peak = peaks.setdefault(pid, {"rss": 0.0, "pss": 0.0})
                    peaks[pid] = {key: max(peak[key], now[key]) for key in peak}

    with tempfile.TemporaryDirectory() as scratch:
        make_photos(Path(scratch) / "photos", args.count, bad=False)
        keys, _, root = find_inputs([f"{scratch}/photos"])
        options = Options(out=f"{scratch}/out", root=root)
        pending, _, _ = plan(keys, options)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        records = [record for step in run(pending, options, "local", workers=args.workers, device="cpu") for record in step]
        done.set()
        sampler.join()
    workers = sorted({int(r["worker"].rsplit(":", 1)[1]) for r in records if r.get("worker")} & peaks.keys())
    if not workers:
        raise SystemExit("no worker was sampled (not Linux, or the run was too short)")
    report = {
        "what": "peak memory of `facevox batch --device` workers (bench/worker_memory.py), network process on the CPU",
        "machine": {"cpus": os.cpu_count(), "processor": platform.machine(), "python": platform.python_version()},
        "photos": len(records), "workers": len(workers),
        "peak_rss_mb": {"max": round(max(peaks[w]["rss"] for w in workers), 1), "per_worker": [round(peaks[w]["rss"], 1) for w in workers]},
        "peak_pss_mb": {"max": round(max(peaks[w]["pss"] for w in workers), 1), "per_worker": [round(peaks[w]["pss"], 1) for w in workers]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
