"""One model's CPU time and peak memory a face, in a process of its own (bench/hsp.py, bench/hsp_cpu.py):

    python -m bench.hsp_timing MODEL CROPS.npy THREADS [--blocks BLOCKS.npz] [--no-mirror] [--threshold T]   # prints one JSON line

The network and the surface (front depth, `facevox.mesh.surface_from_depth`) on each crop after the
first (a warm-up); wall and CPU seconds a face, the CPU seconds a face of each part (`parts`: each
onnxruntime graph's runs, the numpy around them in the network stage, the surface with its front
depth) and the process's
peak resident memory. BLOCKS.npz: for a hierarchical model, the blocks to refine on each crop instead of
the head's choice (arrays `face{i}_level{l}`, origins (m, 3); `HierarchicalModel.refine`). --no-mirror:
without the mirrored crop's pass (the product's `Settings(mirror=False)`). --threshold: a hierarchical
model's octant refinement threshold instead of its JSON's. Imports only the runtime (no
torch), so the memory is the product's.
"""

from __future__ import annotations

import argparse
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


class Clock:
    """A function whose calls add their CPU seconds to `seconds`."""

    def __init__(self, function):
        self.function, self.seconds = function, 0.0

    def __call__(self, *args, **kwargs):
        start = time.process_time()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.process_time() - start


def instrument(network) -> tuple[dict[str, Clock], Clock | None]:
    """Clock the network's onnxruntime runs, by part name, and a hierarchical model's front depth (made
    in its network stage; counted with the surface, as the dense model's is)."""
    if not hasattr(network, "levels"):
        network.session.run = Clock(network.session.run)
        return {"network": network.session.run}, None
    from facevox.hierarchy import Hierarchy

    front_depth = Clock(Hierarchy.front_depth)
    Hierarchy.front_depth = lambda tree: front_depth(tree)
    for session in [network.trunk, *network.levels]:
        session.run = Clock(session.run)
    return {"trunk": network.trunk.run, **{f"level{i}": s.run for i, s in enumerate(network.levels, start=1)}}, front_depth


def blocks_of(path: str | None, faces: int, levels: int):
    """Each crop's forced blocks (a list per level of origins) from BLOCKS.npz, or None for each crop."""
    if not path:
        return [None] * faces
    data = np.load(path)
    return [[data[f"face{i}_level{level}"] for level in range(1, levels + 1)] for i in range(faces)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("crops")
    parser.add_argument("threads", type=int)
    parser.add_argument("--blocks", default=None)
    parser.add_argument("--no-mirror", action="store_true")
    parser.add_argument("--threshold", type=float, default=None)
    args = parser.parse_args(argv)
    blocks_path = args.blocks
    crops = np.load(args.crops)
    network = load_network(args.model, threads=args.threads, mirror=not args.no_mirror)
    if args.threshold is not None:
        network.threshold = args.threshold
    clocks, front_depth = instrument(network)
    forced = blocks_of(blocks_path, len(crops), len(clocks) - 1)
    seconds = {"network_call": 0.0, "surface": 0.0}

    def face(crop, blocks):
        start = time.process_time()
        output = network(crop[None], blocks=[blocks])[0] if blocks is not None else network(crop[None])[0]
        middle = time.process_time()
        surface_from_depth(*output.front_depth())
        seconds["network_call"] += middle - start
        seconds["surface"] += time.process_time() - middle
        return output

    face(crops[0], forced[0])  # warm-up
    for clock in [*clocks.values(), front_depth or Clock(None)]:
        clock.seconds = 0.0
    seconds.update(network_call=0.0, surface=0.0)
    wall, cpu = time.perf_counter(), time.process_time()
    blocks = []
    for crop, chosen in zip(crops[1:], forced[1:]):
        output = face(crop, chosen)
        if output.hierarchy is not None:
            blocks.append([len(level.origin) for level in output.hierarchy.levels])
    count = len(crops) - 1
    front = front_depth.seconds if front_depth else 0.0
    parts = {name: clock.seconds / count for name, clock in clocks.items()}
    parts["numpy"] = (seconds["network_call"] - sum(clock.seconds for clock in clocks.values()) - front) / count
    parts["surface"] = (seconds["surface"] + front) / count
    result = {"wall_s_per_face": (time.perf_counter() - wall) / count, "cpu_s_per_face": (time.process_time() - cpu) / count,
              "parts": parts, "peak_rss_mb": peak_rss_mb(), "faces": count, "torch_loaded": "torch" in sys.modules}
    if blocks:
        result["blocks"] = np.mean(blocks, axis=0).tolist()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
