"""The local engine: a process pool on this machine, each worker loading one Reconstructor once; with a
device (e.g. "cuda"), the workers share one network process on it (facevox.batch.network_server)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from typing import Iterator

from facevox.batch.network_server import NetworkClient, NetworkServer, ServerHandle
from facevox.batch.work import Options, make_reconstructor, process_batch

_worker: dict = {}  # this worker process's reconstructor, store and options
# With a shared network process, each worker waits for it several times as long as it works (two round
# trips a face), so the default is six workers a core: on a 16-vCPU H200 machine, fp16, 48 / 64 / 80 /
# 96 / 112 workers ran 442 / 499 / 518 / 527 / 524 faces/s (bench/results/gpu_h200/reserved_core_w*_fp16.json
# of 2026-11-26).
DEVICE_WORKERS_PER_CORE = 6
# A worker with a shared network process peaked at 250 MB resident (146 MB proportional) on a 2-core VM
# (bench/results/worker_memory.json), so by default the workers take at most half the memory available
# when the job starts.
WORKER_MEMORY = 250 * 2**20
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")


@contextlib.contextmanager
def one_thread_libraries():
    """Processes started inside use one thread in their OpenMP, BLAS and OpenCV libraries (numpy's and
    scipy's OpenBLAS, MKL, OpenCV's pool): with a worker per core, each worker's pool of BLAS threads
    spun between the small matrix products it was given and burned about as much CPU again as the work
    itself, and OpenCV's pool waits actively too. Set in the environment, which a process inherits as it
    starts; the user's own setting is kept."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _start(options: Options, threads: int, server: ServerHandle | None) -> None:
    from facevox.batch.store import open_store

    if server and server.cores:  # the network process has a core of its own
        os.sched_setaffinity(0, server.cores)
    network = NetworkClient(server) if server else None
    _worker.update(reconstructor=make_reconstructor(options, threads, network=network), store=open_store(options.out), options=options)


def _step(keys: list[str]) -> list[dict]:
    return process_batch(_worker["reconstructor"], _worker["store"], _worker["options"], [(key, None) for key in keys])


def available_memory() -> int | None:
    """Bytes of memory available to new processes (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_device_workers(cores: int, available: int | None = None) -> int:
    """DEVICE_WORKERS_PER_CORE a core, fewer if half the available memory (default: `available_memory`)
    holds fewer, but one a core at least."""
    available = available if available is not None else available_memory()
    if available is None:
        return DEVICE_WORKERS_PER_CORE * cores
    return max(cores, min(DEVICE_WORKERS_PER_CORE * cores, available // 2 // WORKER_MEMORY))


def run_local(keys: list[str], options: Options, workers: int | None = None, batch_size: int = 8,
              device: str | None = None, reserve_core: bool = True, precision: str | None = None) -> Iterator[list[dict]]:
    """Process the inputs in steps of batch_size photos; yields each step's records as it finishes.
    workers: default one per core, or with a device `default_device_workers`. device: run the network
    there (e.g. "cuda") in one process, batched across the workers; reserve_core: keep that process to a
    core of its own (NetworkServer's reserve_core, on 4 cores or more; 48 workers: 405 against 369
    faces/s in one paired run); precision: the network's number format there
    (facevox.torch_volume.TorchVolumeModel; None: fp16 on CUDA, else fp32).
    Closing the iterator early (or Ctrl-C) cancels the steps not started; finished ones stay written."""
    cores = os.cpu_count() or 1
    workers = max(1, min(workers or (default_device_workers(cores) if device else cores), len(keys)))
    context = multiprocessing.get_context("spawn")  # no fork after onnxruntime or MediaPipe threads start
    with ExitStack() as stack:
        server = None
        if device:
            server = stack.enter_context(NetworkServer(options.model, device, slots=workers, volume=options.solid,
                                                         reserve_core=reserve_core, precision=precision,
                                                         mirror=options.mirror)).handle
        stack.enter_context(one_thread_libraries())  # for the workers (the network process has started)
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start,
                                   initargs=(options, max(1, cores // workers), server))
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        steps = [pool.submit(_step, keys[i:i + batch_size]) for i in range(0, len(keys), batch_size)]
        for step in as_completed(steps):
            yield step.result()
