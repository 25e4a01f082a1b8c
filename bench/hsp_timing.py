"""One model's CPU time and peak memory a face, in a process of its own (bench/hsp.py runs it):

    python -m bench.hsp_timing MODEL CROPS.npy THREADS      # prints one JSON line

The network and the surface (front depth, `facevox.mesh.surface_from_depth`) on each crop after the
first (a warm-up); wall and CPU seconds a face and the process's peak resident memory. Imports only the
runtime (no torch), so the memory is the product's.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from facevox.mesh import surface_from_depth
from facevox.volume import load_network


def peak_rss_mb() -> float:
    """This process's peak resident memory: /proc's VmHWM (getrusage's ru_maxrss would carry the
    parent's peak into a child on Linux)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(model: str, crops_path: str, threads: str) -> None:
    crops = np.load(crops_path)
    network = load_network(model, threads=int(threads))

    def face(crop):
        output = network(crop[None])[0]
        surface_from_depth(*output.front_depth())

    face(crops[0])  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for crop in crops[1:]:
        face(crop)
    count = len(crops) - 1
    print(json.dumps({"wall_s_per_face": (time.perf_counter() - wall) / count, "cpu_s_per_face": (time.process_time() - cpu) / count,
                      "peak_rss_mb": peak_rss_mb(), "faces": count, "torch_loaded": "torch" in sys.modules}))


if __name__ == "__main__":
    main(*sys.argv[1:])
