"""The batch index: one Parquet row per input (status, reason, outputs, landmarks, pose, timings).

It lives in OUT/index/ as part files, one per batch step, each written after that step's mesh files
and named by a hash of its inputs: a step redone (a rerun, or Ray retrying a dead actor's batch)
replaces its part instead of adding one, and a rerun skips every input the index already holds.
Read it whole with `read_index`, or `pandas.read_parquet("OUT/index")`.
"""

from __future__ import annotations

import hashlib
import posixpath

import pyarrow as pa

from facevox.batch.store import Store, write_bytes

INDEX = "index"
STATUSES = ("done", "no face", "failed")
STAGES = ("decode", "detect", "network", "mesh", "colour", "solid", "head", "write")
_floats = pa.list_(pa.float32())
SCHEMA = pa.schema([
    ("input", pa.string()),  # the photo's absolute path: the key a rerun skips by
    ("status", pa.string()),  # one of STATUSES
    ("reason", pa.string()),  # one line, for "no face" and "failed"
    ("outputs", pa.list_(pa.string())),  # files written, relative to OUT
    ("faces", pa.int32()),
    ("boxes", pa.list_(_floats)),  # per face: x0, y0, x1, y1 (photo pixels)
    ("scores", _floats),
    ("landmarks_3d", pa.list_(pa.list_(_floats))),  # per face: 68 × (x, y, z), photo frame (Face.landmarks_3d)
    ("yaw", _floats), ("pitch", _floats), ("roll", _floats),  # per face, degrees
    ("seconds", pa.float64()),  # this input's whole step in the worker: wall clock
    ("cpu_seconds", pa.float64()),  # and the worker process's CPU time (all its threads) meanwhile
    *[(f"time_{stage}", pa.float64()) for stage in STAGES],  # Reconstructor.timings, and writing the files
    ("worker", pa.string()),  # host:pid
    ("finished", pa.timestamp("ms", tz="UTC")),
])


def new_record(key: str, status: str = "done", reason: str | None = None) -> dict:
    """A record with no faces yet (empty per-face lists); the caller fills in the rest."""
    lists = ("outputs", "boxes", "scores", "landmarks_3d", "yaw", "pitch", "roll")
    return {"input": key, "status": status, "reason": reason, "faces": 0, **{name: [] for name in lists}}


def write_part(store: Store, records: list[dict]) -> None:
    """Add (or replace) the index part of one batch step."""
    import pyarrow.parquet as pq

    name = hashlib.sha1("\n".join(r["input"] for r in records).encode()).hexdigest()[:20]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(records, schema=SCHEMA), sink)
    write_bytes(store, f"{INDEX}/part-{name}.parquet", sink.getvalue().to_pybytes())


def read_index(store: Store, columns: list[str] | None = None) -> pa.Table:
    """Every part of the index as one table (empty if there is none yet)."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    found = store.fs.get_file_info(pafs.FileSelector(store.path(INDEX), allow_not_found=True))
    parts = sorted(f.path for f in found if f.type == pafs.FileType.File
                   and posixpath.basename(f.path).startswith("part-") and f.path.endswith(".parquet"))
    if not parts:
        return SCHEMA.empty_table().select(columns or SCHEMA.names)
    return ds.dataset(parts, schema=SCHEMA, format="parquet", filesystem=store.fs).to_table(columns=columns)


def recorded_inputs(store: Store) -> set[str]:
    """Inputs the index already holds, whatever their status."""
    return set(read_index(store, ["input"]).column("input").to_pylist())
