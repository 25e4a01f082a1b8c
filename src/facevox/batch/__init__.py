"""facevox batch: many photos in; one mesh (and JSON) per face and a Parquet index of every input out.

    facevox batch photos/ -o out/                                  # a process pool on this machine
    facevox batch photos/ -o out/ --device cuda                    # ... sharing one GPU for the network
    facevox batch /mnt/photos -o s3://bucket/faces --engine ray --address auto

Both engines write the same layout:

    OUT/<path below the inputs' common folder>/<stem>.glb, <stem>.json   (<stem>_face2.glb ... for more faces)
    OUT/index/part-*.parquet     one row per input: status (done / no face / failed), reason, outputs,
                                 landmarks, pose, timings (facevox.batch.index.SCHEMA)

Each step writes its files, then its index part, each atomically; a rerun skips every input already
in the index, so an interrupted job continues where it stopped.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterator

from facevox.batch.work import Options, find_inputs, output_name

__all__ = ["ENGINES", "Options", "find_inputs", "plan", "run"]
ENGINES = ("local", "ray")


def plan(keys: list[str], options: Options) -> tuple[list[str], list[dict], int]:
    """What a run must do: the inputs (absolute paths, see find_inputs) that OUT's index lacks; the records
    of those whose files would overwrite another input's (same path below the root but for the suffix),
    written to the index as failed; and how many inputs the index already holds."""
    from facevox.batch.index import new_record, recorded_inputs, write_part
    from facevox.batch.store import open_store

    store = open_store(options.out)
    recorded = recorded_inputs(store)
    owners, pending, clashes = {}, [], []
    for key in keys:
        owner = owners.setdefault(output_name(options, key).with_suffix(""), key)
        if key in recorded:
            continue
        if owner != key:
            reason = f"its files would overwrite those of {owner}"
            clashes.append(new_record(key, "failed", reason) | {"finished": datetime.now(timezone.utc)})
        else:
            pending.append(key)
    if clashes:
        write_part(store, clashes)
    return pending, clashes, len(keys) - len(pending) - len(clashes)


def run(pending: list[str], options: Options, engine: str = "local", workers: int | None = None, batch_size: int = 8,
        address: str | None = None, gpus_per_worker: float = 0.0, device: str | None = None,
        reserve_core: bool = True, precision: str | None = None) -> Iterator[list[dict]]:
    """Process the inputs with the engine (see plan); yields their records as steps finish.
    GPUs: Ray gives each actor gpus_per_worker of one; the local engine runs the network on `device`
    in one process that all its workers share (reserve_core: on a core of its own; precision: the
    network's number format, None for facevox.torch_volume.default_precision; see facevox.batch.network_server.NetworkServer). A NetworkServerError from that process stops the run."""
    if not pending:
        return
    if engine == "ray":
        if device:
            raise ValueError("--device is for the local engine; Ray's actors take --gpus-per-worker")
        from facevox.batch.ray_engine import run_ray

        yield from run_ray(pending, options, address, workers, gpus_per_worker, batch_size)
    elif engine == "local":
        if gpus_per_worker:
            raise ValueError("--gpus-per-worker needs --engine ray (the local engine shares one GPU with --device cuda)")
        from facevox.batch.local import run_local

        yield from run_local(pending, options, workers, batch_size, device, reserve_core, precision)
    else:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
