"""The Ray engine: Ray Data reads the photos; an actor pool, each actor loading one Reconstructor once,
reconstructs them and writes their files and index parts (`pip install facevox[cluster]`).

Actors and read tasks ask for fractions of a CPU: actors whole CPUs would leave Ray Data's read
tasks none on a small machine, and the job would wait forever. A killed actor is restarted and its
batch redone by Ray (files rewritten whole, its index part replaced), so nothing is lost or doubled.
"""

from __future__ import annotations

import math
from typing import Iterator

from facevox.batch.work import Options

READ_CPUS = 0.2  # per read task
ACTOR_SHARE = 0.8  # of the cluster's CPUs, shared among the actors
MAX_BLOCKS = 10_000  # read blocks per job; beyond batch_size × MAX_BLOCKS photos, blocks grow


def one_opencv_thread() -> None:
    """OpenCV (the Haar detector's, if installed) on one thread: Ray gives actors one OpenMP thread, and
    OpenCV's own pool would wait actively on every core."""
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(1)


class ReconstructWorker:
    """One Ray actor: a Reconstructor (onnxruntime on one thread, or torch on a GPU) and the output store."""

    def __init__(self, options: Options, gpu: bool):
        from facevox.batch.store import open_store
        from facevox.batch.work import make_reconstructor

        one_opencv_thread()
        self.options = options
        self.store = open_store(options.out)
        self.reconstructor = make_reconstructor(options, threads=1, device="cuda" if gpu else None)

    def __call__(self, batch: dict):
        import pyarrow as pa

        from facevox.batch.index import SCHEMA
        from facevox.batch.work import process_batch

        records = process_batch(self.reconstructor, self.store, self.options, zip(batch["path"], batch["bytes"]))
        return pa.Table.from_pylist(records, schema=SCHEMA)


def run_ray(keys: list[str], options: Options, address: str | None = None, workers: int | None = None,
            gpus_per_worker: float = 0.0, batch_size: int = 8) -> Iterator[list[dict]]:
    """Process the inputs on a Ray cluster (address "auto", "ray://host:port", or None for a local one);
    yields records as batches finish. Every node must see the input paths (a shared filesystem)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address)
    resources = ray.cluster_resources()
    if gpus_per_worker:
        workers = workers or max(1, int(resources.get("GPU", 0) / gpus_per_worker))
    else:
        workers = workers or max(1, int(resources.get("CPU", 1)))
    blocks = min(math.ceil(len(keys) / batch_size), MAX_BLOCKS)  # small blocks, so every actor gets work
    data = ray.data.read_binary_files(keys, include_paths=True, ignore_missing_paths=True, num_cpus=READ_CPUS,
                                      override_num_blocks=blocks)
    data = data.map_batches(
        ReconstructWorker, fn_constructor_args=(options, bool(gpus_per_worker)), batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=ACTOR_SHARE * resources.get("CPU", 1) / workers,
        num_gpus=gpus_per_worker or None,
    )
    left = set(keys)
    for batch in data.iter_batches(batch_size=None, batch_format="pyarrow"):
        records = batch.to_pylist()
        left.difference_update(r["input"] for r in records)
        yield records
    if left:  # gone between listing and reading: recorded, so that every input is accounted for
        yield _unread(sorted(left), options)


def _unread(keys: list[str], options: Options) -> list[dict]:
    from datetime import datetime, timezone

    from facevox.batch.index import new_record, write_part
    from facevox.batch.store import open_store

    records = [new_record(key, "failed", f"{key}: no such file") | {"finished": datetime.now(timezone.utc)} for key in keys]
    write_part(open_store(options.out), records)
    return records
