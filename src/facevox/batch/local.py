"""The local engine: a process pool on this machine, each worker loading one Reconstructor once."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Iterator

from facevox.batch.work import Options, make_reconstructor, process_batch

_worker: dict = {}  # this worker process's reconstructor, store and options


def _start(options: Options, threads: int) -> None:
    from facevox.batch.store import open_store

    _worker.update(reconstructor=make_reconstructor(options, threads), store=open_store(options.out), options=options)


def _step(keys: list[str]) -> list[dict]:
    return process_batch(_worker["reconstructor"], _worker["store"], _worker["options"], [(key, None) for key in keys])


def run_local(keys: list[str], options: Options, workers: int | None = None, batch_size: int = 8) -> Iterator[list[dict]]:
    """Process the inputs in steps of batch_size photos; yields each step's records as it finishes.
    Closing the iterator early (or Ctrl-C) cancels the steps not started; finished ones stay written."""
    cores = os.cpu_count() or 1
    workers = max(1, min(workers or cores, len(keys)))
    context = multiprocessing.get_context("spawn")  # no fork after onnxruntime or MediaPipe threads start
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start, initargs=(options, max(1, cores // workers)))
    try:
        steps = [pool.submit(_step, keys[i:i + batch_size]) for i in range(0, len(keys), batch_size)]
        for step in as_completed(steps):
            yield step.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
