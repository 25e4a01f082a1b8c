"""Where the dense network's CPU time goes, and what an int8 copy of it saves (onnxruntime, this machine).

    PYTHONPATH=src:. python -m bench.network_cpu [--models vrn-hg2-w192,FILE-int8.onnx] [--rounds 5] \\
        [--out bench/results/network_cpu.json]

Input: the astronaut's crop (the pipeline's detection and crop rule) and its mirror image, one call, as
`facevox.volume.VolumeModel` runs a face. For each model, one and two onnxruntime threads: the CPU
seconds of a call (process time), median of `--rounds` after a warm-up, the models in turn each round
(the machine's load drifts). For the first model, onnxruntime's profile on one thread: each layer's
share of the kernel time, summed by the network's top-level module (the decoder, the hourglasses...).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def astronaut_batch() -> np.ndarray:
    from skimage.data import astronaut

    from facevox import crop
    from facevox.faces import default_detectors, detect_faces

    image = astronaut()
    box = detect_faces(image, default_detectors())[0].box
    face = crop.crop_image(image, crop.crop_matrix(box, 192), 192)
    batch = np.stack([face, face[:, ::-1]]).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32) / 255


def session(path: Path, threads: int, profile: str | None = None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def module_of(node: str) -> str:
    """'/net/decode/decode.2/Relu_output_0_nchwc' → 'decode'; graph-level nodes keep their own name."""
    parts = node.strip("/").split("/")
    return parts[1] if parts[0] == "net" and len(parts) > 2 else parts[-1].split("_output")[0]


def profile(path: Path, batch: np.ndarray, runs: int = 5) -> dict:
    """Each layer's median kernel time over `runs` calls after a warm-up (a layer that the machine's load
    delayed in one call does not count), summed by module."""
    with tempfile.TemporaryDirectory() as folder:
        timed = session(path, 1, str(Path(folder) / "profile"))
        for _ in range(runs + 1):
            timed.run(None, {"image": batch})
        events = json.loads(Path(timed.end_profiling()).read_text())
    calls = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    durations = collections.defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= calls[1]:
            durations[event["name"].removesuffix("_kernel_time")].append(event["dur"])
    by_module = collections.Counter()
    for node, values in durations.items():
        by_module[module_of(node)] += statistics.median(values)
    total = sum(by_module.values())
    return {"kernel_ms_per_call": round(total / 1000, 1),
            "share_by_module": {name: round(us / total, 3) for name, us in by_module.most_common(12)}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vrn-hg2-w192", help="comma-separated: shipped model names or ONNX files")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "network_cpu.json")
    args = parser.parse_args(argv)

    from facevox.volume import model_files

    batch = astronaut_batch()
    paths = {name: model_files(name)[0] for name in args.models.split(",")}
    result = {"what": __doc__.splitlines()[0], "command": "python -m bench.network_cpu " + " ".join(sys.argv[1:] if argv is None else argv),
              "cpus": os.cpu_count(), "input": "the astronaut's crop and its mirror image, one call", "cpu_s_per_call": {}}
    for threads in (1, 2):
        sessions = {name: session(path, threads) for name, path in paths.items()}
        seconds = collections.defaultdict(list)
        for s in sessions.values():
            s.run(None, {"image": batch})
        for _ in range(args.rounds):
            for name, s in sessions.items():
                start = time.process_time()
                s.run(None, {"image": batch})
                seconds[name].append(time.process_time() - start)
        for name in paths:
            result["cpu_s_per_call"].setdefault(name, {})[f"{threads} thread{'s' * (threads > 1)}"] = round(statistics.median(seconds[name]), 4)
    first = next(iter(paths))
    result["profile"] = {first: profile(paths[first], batch)}
    result["sizes_mb"] = {name: round(path.stat().st_size / 1e6, 1) for name, path in paths.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
