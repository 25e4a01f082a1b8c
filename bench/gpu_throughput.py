"""Faces per second of `facevox batch --device cuda` on one machine (issue 7), and each stage alone, to
say which one bounds it.

On the GPU machine (python 3.12 with torch (CUDA), numpy, onnx, onnxruntime, opencv-python-headless,
scikit-image, scipy, pillow, pyarrow, typer, rich, and trimesh, e.g. `pip install --no-deps
trimesh-*.whl`; mediapipe is optional: without it the Haar detector runs, and the result says which
ran), from the repository root (no install of facevox needed: the script puts src/ on the path):

    python3 bench/gpu_throughput.py --device cuda --photos DIR [--count 4000] [--workers 16[,32,...]] [--reserve-core] [--no-mirror]

DIR's photos are used as they are, repeated (through symlinks, so that each is a separate input) up
to --count inputs. Without --photos, --count photos are made by tests/photos.py (needs matplotlib).
On a CPU, as a smoke test: `python bench/gpu_throughput.py --device cpu --count 20 --out /tmp/gpu.json`.
`--model hsp-hg2-w192` (or a hierarchical model's file) measures the hierarchical model (docs/hsp.md) the
same way (facevox.torch_volume.TorchHierarchicalModel); the network alone then also gives the blocks a
face it refined at each level on these crops.

How the published figures were made on the lent H100 machine (it has OpenCV 5, without the Haar
cascades, and a protobuf too new for MediaPipe): wheels fetched here with `pip download --no-deps
--python-version 3.12 --only-binary=:all:` (mediapipe 0.10.21, protobuf 4.25.9, onnx 1.22.0, which
works with that protobuf, and trimesh) and 100 photos made by tests/photos.py into cache/photos,
carried in two calls (the wheels do not fit one), installed with `python3 -m pip install --no-deps`,
then `python3 bench/gpu_throughput.py --device cuda --photos cache/photos --count 3000 --workers 16,32,48
--batch-sizes 16,64` (gpu_throughput.json: the code at 8429f60, on a machine whose GPU had just
finished three training runs). The later runs on H200 machines and an H100 one, each with its command: bench/results/gpu_h200/
and bench/results/gpu_h100/. Earlier code, same photos: `--count 4000 --batch-sizes 16`
(gpu_throughput_autotune.json, with the network process still autotuning cuDNN and the workers' BLAS
pools spinning; gpu_throughput_settings.json holds four more settings, each with its command;
gpu_throughput_no_autotune.json the two runs after autotuning was switched off; the earlier,
whole-volume version of the network process: `--count 6000` for gpu_throughput_volume.json,
`--workers 32 --batch-sizes 32` for gpu_throughput_volume_w32.json).

Measured, in this order:
  end_to_end: the local engine with the shared network process on the device and --workers workers
    (each count in turn; --reserve-core: the network process on a core of its own, as `facevox batch`
    does by default; without it, sharing the cores), GLB + JSON per
    face: faces/s over the whole run (start-up included), after the first step, and while all
    workers were busy; the GPU's utilisation and the machine's CPU busy share meanwhile (nvidia-smi
    and /proc/stat, sampled every 0.5 s);
  network: the server's batch step alone (`answer`: the torch network's forward, landmarks and front depth
    on the device, outputs copied into host memory as the server does) and the forward alone, for a
    full pass and a landmarks-only pass (the first of a face's two), at several batch sizes, in the
    --precision of the end-to-end run (bench/network_formats.py compares the formats' speed and outputs);
  network_process: the network process as the workers reach it (shared memory, queues, its batching),
    with --workers client processes (each count in turn) that do nothing but send faces (a
    landmarks-only pass, then a full pass): the faces/s it sustains and the round-trip times (mean, 90th percentile) of each pass;
  cpu_stages: worker seconds per face of each CPU stage, from the end-to-end run's index (decode,
    detect, mesh, colour, write) and measured here (crop: twice per face); the faces/s that the
    machine's cores sustain for them, from the workers' CPU time per face.
The server batches at most one request per worker, so the network's rate at batch size = workers is
the one that bounds the end-to-end run. Writes bench/results/gpu_throughput.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]  # spawned workers inherit this

import numpy as np  # noqa: E402

from facevox.torch_volume import PRECISIONS, default_precision  # noqa: E402


def inputs(photos: str | None, count: int, scratch: Path) -> tuple[list[str], str]:
    """count inputs (absolute paths) and their root: DIR's photos repeated through symlinks, or made."""
    from facevox.batch import find_inputs

    if photos is None:
        from photos import make_photos

        make_photos(scratch / "photos", count, bad=False)
        keys, _, root = find_inputs([str(scratch / "photos")])
        return keys, root
    found, problems, folder = find_inputs([photos])
    if not found:
        raise SystemExit(f"no photos in {photos}: {problems}")
    for n in range(count):
        source = found[n % len(found)]
        link = scratch / "inputs" / f"copy{n // len(found)}" / os.path.relpath(source, folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source)
    keys, _, root = find_inputs([str(scratch / "inputs")])
    return keys, root


def cpu_times() -> tuple[int, int] | None:
    """The machine's (busy, total) CPU time in ticks since boot, from /proc/stat (None elsewhere)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks[:8]) - idle, sum(ticks[:8])


class UsageSampler(threading.Thread):
    """Every 0.5 s until stopped: the GPU's utilisation (%) and memory used (MiB) from nvidia-smi, and the
    share of all the machine's CPU time that was busy since the last sample (/proc/stat)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.cpu_busy: list[float] = []
        self.done = threading.Event()

    def run(self):
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"]
        last = cpu_times()
        while not self.done.wait(0.5):
            line = subprocess.run(query, capture_output=True, text=True).stdout.strip()
            if line:
                self.samples.append(tuple(float(v) for v in line.split(",")))
            now = cpu_times()
            if last and now and now[1] > last[1]:
                self.cpu_busy.append(100 * (now[0] - last[0]) / (now[1] - last[1]))
            last = now

    def summary(self) -> tuple[dict | None, float | None]:
        """The GPU's figures, and the median of the CPU busy shares (%)."""
        self.done.set()
        self.join()
        cpu = round(float(np.median(self.cpu_busy)), 1) if self.cpu_busy else None
        if not self.samples:
            return None, cpu
        busy, memory = np.array(self.samples).T
        return {"samples": len(busy), "mean_percent": round(busy.mean(), 1), "median_percent": float(np.median(busy)),
                "max_memory_mib": float(memory.max())}, cpu


def steady_faces_per_second(index) -> float | None:
    """Faces/s while every worker was busy: from the moment the last worker finished its first photo to
    the moment the first one finished its last (start-up and tail left out), from the index."""
    import pyarrow as pa

    workers = np.array(index["worker"].to_pylist())
    finished = index["finished"].cast(pa.int64()).to_numpy()  # ms
    faces = index["faces"].fill_null(0).to_numpy()
    firsts, lasts = zip(*((finished[workers == w].min(), finished[workers == w].max()) for w in np.unique(workers)))
    start, end = max(firsts), min(lasts)
    if end <= start:
        return None
    return round(float(faces[(finished > start) & (finished <= end)].sum()) / ((end - start) / 1e3), 2)


def end_to_end(keys: list[str], root: str, out: str, device: str, workers: int, reserve_core: bool, precision: str,
               mirror: bool, model: str | None = None) -> dict:
    """The local engine with the shared network process, timed; stage seconds per face from its index."""
    import pyarrow.compute as pc

    from facevox.batch import Options, plan, run
    from facevox.batch.index import STAGES, read_index
    from facevox.batch.network_server import split_cores
    from facevox.batch.store import open_store

    options = Options(out=out, root=root, mirror=mirror, model=model)
    sampler = UsageSampler() if device.startswith("cuda") and shutil.which("nvidia-smi") else None
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    pending, _, _ = plan(keys, options)
    if sampler:
        sampler.start()
    first, faces_after_first = None, 0
    for records in run(pending, options, "local", workers=workers, device=device, reserve_core=reserve_core, precision=precision):
        if first is None:
            first = time.perf_counter()
        else:
            faces_after_first += sum(r["faces"] for r in records)
    end = time.perf_counter()
    gpu, cpu_busy = sampler.summary() if sampler else (None, None)
    index = read_index(open_store(out))
    faces = pc.sum(index["faces"]).as_py()
    done = index.filter(pc.equal(index["status"], "done"))
    timed_stages = [stage for stage in STAGES if done[f"time_{stage}"].null_count < done.num_rows]
    per_face = {stage: round(pc.sum(done[f"time_{stage}"]).as_py() / faces, 5) for stage in timed_stages}
    return {
        "photos": index.num_rows, "faces": faces, "done": done.num_rows, "workers": workers,
        "precision": precision, "mirror": mirror, "reserve_core": reserve_core, "server_core_reserved": reserve_core and split_cores() is not None,
        "seconds": round(end - start, 2), "seconds_to_first_step": round(first - start, 2) if first else None,
        "faces_per_second": round(faces / (end - start), 2),
        "faces_per_second_after_first_step": round(faces_after_first / (end - first), 2) if end > first else None,
        "faces_per_second_all_workers_busy": steady_faces_per_second(index),
        "worker_seconds_per_face": per_face,
        "worker_seconds_per_face_whole": round(pc.sum(done["seconds"]).as_py() / faces, 5),
        "worker_cpu_seconds_per_face": round(pc.sum(done["cpu_seconds"]).as_py() / faces, 5),
        "gpu_utilisation": gpu, "cpu_busy_median_percent": cpu_busy,
        "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
    }


def face_crops(keys: list[str], size: int, limit: int = 32) -> tuple[np.ndarray, float]:
    """Crops of the faces in the first photos, and the seconds one crop takes (crop rule + warp)."""
    from facevox import crop as crop_rule
    from facevox.errors import FacevoxError
    from facevox.faces import default_detectors, detect_faces
    from facevox.image import load_image

    detectors, crops, seconds = default_detectors(), [], 0.0
    for key in keys:
        try:
            image = load_image(key)
        except FacevoxError:
            continue
        for detection in detect_faces(image, detectors):
            start = time.perf_counter()
            crops.append(crop_rule.crop_image(image, crop_rule.crop_matrix(detection.box, size), size))
            seconds += time.perf_counter() - start
        if len(crops) >= limit:
            break
    if not crops:
        raise SystemExit("no face found in the first photos")
    return np.stack(crops), seconds / len(crops)


def timed(step, minimum: float = 1.5, least: int = 3) -> float:
    """Seconds per call of step (after two warm-up calls), over at least `least` calls and `minimum` s."""
    step(), step()
    calls, start = 0, time.perf_counter()
    while calls < least or time.perf_counter() - start < minimum:
        step()
        calls += 1
    return (time.perf_counter() - start) / calls


def network_alone(model_path, device: str, arrays: dict, batch_sizes: list[int], precision: str, mirror: bool) -> dict:
    """Crops/s of the server's batch step (into `arrays`, host memory laid out as the server's shared
    block) and of the forward alone, for full passes and landmarks-only passes; faces/s (one pass of
    each per face) of the step."""
    import torch

    from facevox.batch.network_server import answer, staging
    from facevox.torch_volume import torch_network

    model = torch_network(model_path, device, precision, mirror=mirror)
    cuda = model.device.type == "cuda"
    torch.backends.cudnn.benchmark = False  # as the network process runs it
    buffers = staging(model.info, max(batch_sizes), "volume" in arrays, model.device)
    rows = []
    for size in batch_sizes:
        row = {"batch": size}
        for kind, surface in (("full", True), ("landmarks", False)):
            def forward():
                with torch.inference_mode():
                    model.forward(arrays["crops"][:size], surface)
                if cuda:
                    torch.cuda.synchronize()

            arrays["surface"][:size] = surface
            row[f"server_step_{kind}_ms"] = round(timed(lambda: answer(model, arrays, list(range(size)), buffers)) * 1e3, 2)
            row[f"forward_{kind}_ms"] = round(timed(forward) * 1e3, 2)
        step, compute = (row[f"{what}_full_ms"] + row[f"{what}_landmarks_ms"] for what in ("server_step", "forward"))
        rows.append(row | {"server_step_faces_per_second": round(size / step * 1e3, 1), "forward_faces_per_second": round(size / compute * 1e3, 1)})
    result = {"precision": precision, "mirror": mirror, "pinned_host_memory": cuda, "rows": rows}
    if "hierarchy" in model.info:  # what the head refined on these crops: the levels' cost follows it
        size = max(batch_sizes)
        with torch.inference_mode():
            tree = model.forward(arrays["crops"][:size], True)[0]
        result["blocks_per_face"] = [round(len(origin) / size, 1) for _, origin, _ in tree.levels]
    return result


def _client(handle, crops: np.ndarray, warmup: float, seconds: float, results) -> None:
    """One client process of `network_process`: faces (a landmarks-only pass, then a full pass) back to back."""
    from facevox.batch.network_server import NetworkClient

    client, trips, faces = NetworkClient(handle), {"landmarks": [], "full": []}, 0
    start = time.perf_counter()
    while time.perf_counter() - start < warmup + seconds:
        measured = time.perf_counter() - start >= warmup
        crop = crops[faces % len(crops)]
        for kind, surface in (("landmarks", False), ("full", True)):
            sent = time.perf_counter()
            client(crop, surface=surface)
            if measured:
                trips[kind].append(time.perf_counter() - sent)
        faces += measured
    results.put(trips | {"faces": faces})


def network_process(model_path, device: str, crops: np.ndarray, clients: int, precision: str, mirror: bool,
                    warmup: float = 3.0, seconds: float = 8.0) -> dict:
    """The network process as the workers use it (shared memory, queues, batching), with `clients`
    processes that do nothing but send faces: faces/s over `seconds` after `warmup` (each client's own
    count; they start within a second or two of each other) and the round-trip times of each pass."""
    import multiprocessing

    from facevox.batch.network_server import NetworkServer

    context = multiprocessing.get_context("spawn")
    with NetworkServer(model_path, device, slots=clients, precision=precision, mirror=mirror) as server:
        results = context.Queue()
        processes = [context.Process(target=_client, args=(server.handle, crops, warmup, seconds, results)) for _ in range(clients)]
        for process in processes:
            process.start()
        reports = [results.get() for _ in processes]
        for process in processes:
            process.join()
    trips = {kind: np.concatenate([r[kind] for r in reports]) * 1e3 for kind in ("landmarks", "full")}
    return {"clients": clients, "precision": precision, "mirror": mirror, "faces_per_second": round(sum(r["faces"] for r in reports) / seconds, 1),
            **{f"{kind}_trip_ms": {"mean": round(float(t.mean()), 2), "p90": round(float(np.percentile(t, 90)), 2)}
               for kind, t in trips.items()}}


def machine(device: str) -> dict:
    import torch

    from facevox.faces import default_detectors

    facts = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
             "detectors": [d.name for d in default_detectors()]}
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--photos", help="a folder of photos (default: made by tests/photos.py)")
    parser.add_argument("--count", type=int, default=4000, help="inputs of each end-to-end run")
    parser.add_argument("--workers", default=str(os.cpu_count()),
                        help="worker processes, or a comma-separated list: an end-to-end run and a network-process run for each")
    parser.add_argument("--batch-sizes", help="network alone; default 1,16,64 on CUDA, 1,4 on a CPU (and each --workers)")
    parser.add_argument("--model", help="another ONNX model (a JSON of its sizes beside it), or a shipped model's name, e.g. "
                                        "hsp-hg2-w192 (hierarchical: the network alone also reports its blocks a face)")
    parser.add_argument("--precision", choices=PRECISIONS, help="the network's number format (end to end and alone); default: facevox's (fp16 on CUDA)")
    parser.add_argument("--reserve-core", action="store_true", help="the network process on a core of its own (NetworkServer's reserve_core)")
    parser.add_argument("--no-mirror", dest="mirror", action="store_false", help="each face's crop alone, not averaged with its mirror image")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_throughput.json")
    args = parser.parse_args()
    args.precision = args.precision or default_precision(args.device)
    cuda = args.device.startswith("cuda")
    worker_counts = [int(w) for w in args.workers.split(",")]
    sizes = [int(s) for s in (args.batch_sizes or ("1,16,64" if cuda else "1,4")).split(",")]
    sizes = sorted({*sizes, *worker_counts})

    from facevox.batch.network_server import block_size, slot_arrays
    from facevox.volume import model_files

    with tempfile.TemporaryDirectory() as scratch:
        keys, root = inputs(args.photos, args.count, Path(scratch))
        runs = [end_to_end(keys, root, f"{scratch}/out{workers}", args.device, workers, args.reserve_core, args.precision,
                           args.mirror, args.model)
                for workers in worker_counts]
        info = model_files(args.model)[1]
        crops, crop_seconds = face_crops(keys, int(info["input_size"]))
    arrays = slot_arrays(np.empty(block_size(info, max(sizes)), np.uint8), info, max(sizes))
    arrays["crops"][:] = crops[np.arange(max(sizes)) % len(crops)]
    network = network_alone(args.model, args.device, arrays, sizes, args.precision, args.mirror)
    processes = [network_process(args.model, args.device, crops, workers, args.precision, args.mirror) for workers in worker_counts]

    best = max(runs, key=lambda r: r["faces_per_second_all_workers_busy"] or r["faces_per_second_after_first_step"] or 0)
    cpu_stages = {stage: seconds for stage, seconds in best["worker_seconds_per_face"].items() if stage != "network"}
    cpu_stages["crop"] = round(2 * crop_seconds, 5)
    cpu_rate = os.cpu_count() / best["worker_cpu_seconds_per_face"]
    network_rate = next(row["server_step_faces_per_second"] for row in network["rows"] if row["batch"] == best["workers"])
    slowest_cpu = max(cpu_stages, key=cpu_stages.get)
    report = {
        "what": f"facevox batch --device {args.device} (local engine, one shared network process) on {len(keys)} inputs "
                f"({'from ' + args.photos if args.photos else 'made by tests/photos.py'}), GLB + JSON per face, with "
                f"{args.workers} workers; then each stage alone (see bench/gpu_throughput.py)",
        "machine": machine(args.device),
        "model": {"name": info.get("name"), "hierarchical": "hierarchy" in info},
        "end_to_end": runs if len(runs) > 1 else runs[0],
        "network": network,
        "network_process": processes if len(processes) > 1 else processes[0],
        "cpu_stages": {"workers": best["workers"], "worker_seconds_per_face": cpu_stages,
                       "worker_cpu_seconds_per_face": best["worker_cpu_seconds_per_face"],
                       "faces_per_second_on_all_cores": round(cpu_rate, 1)},
        "bottleneck": {
            "workers": best["workers"],
            "network_faces_per_second_at_batch_workers": network_rate,
            "cpu_stages_faces_per_second": round(cpu_rate, 1),
            "stage": "network" if network_rate < cpu_rate else slowest_cpu,
            "note": "for the fastest end-to-end run: the lesser of the two bounds it; for the CPU side, the stage with the "
                    "most seconds per face is named",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
