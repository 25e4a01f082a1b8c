"""One batch step, the same for every engine: photos in; mesh files, JSON and an index part out."""

from __future__ import annotations

import glob
import io
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from facevox.batch.network_server import NetworkServerError
from facevox.errors import FacevoxError, NoFaceError


@dataclass(frozen=True)
class Options:
    """What a batch writes. root: the inputs' common folder; outputs mirror the tree below it."""

    out: str
    root: str
    formats: tuple[str, ...] = ("glb", "json")
    all_faces: bool = True
    size_mm: float | None = None
    max_triangles: int = 0
    model: str | None = None
    mirror: bool = True  # volume and landmarks averaged with the mirrored crop's (facevox.api.Settings)
    mesh: str = "head"  # "head", "surface" or "both" (facevox.api.Settings; files named by facevox.files.write_face_files)

    @property
    def solid(self) -> bool:
        """A surface's STL wanted: each face also needs its closed body, made from the whole volume."""
        return "stl" in self.formats and self.mesh != "head"


def find_inputs(inputs: list[str]) -> tuple[list[str], list[str], str]:
    """Photos named, matched by globs (`**` too) or found in folders → their absolute paths (each once,
    in order), one message per unusable input, and the inputs' common folder."""
    from facevox.files import collect_inputs
    from facevox.image import is_image_path

    items, problems = [], []
    for text in inputs:
        if any(c in text for c in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            matches = [m for m in matches if m.is_dir() or is_image_path(m)]
            if not matches:
                problems.append(f"{text}: matches no images")
            items.extend(matches)
        else:
            items.append(Path(text))
    files, missing = collect_inputs(items)
    keys = list(dict.fromkeys(os.path.abspath(f) for f in files))
    folders = [os.path.abspath(i) if i.is_dir() else os.path.dirname(os.path.abspath(i)) for i in items if i.exists()]
    return keys, problems + missing, os.path.commonpath(folders) if folders else os.getcwd()


def make_reconstructor(options: Options, threads: int | None = None, device: str | None = None, network=None):
    """A Reconstructor for these options: onnxruntime on the CPU, torch on `device` (e.g. "cuda"), or
    `network`, any object with VolumeModel's interface (e.g. a facevox.batch.network_server.NetworkClient)."""
    from facevox.api import Reconstructor, Settings

    if device:
        from facevox.torch_volume import torch_network

        network = torch_network(options.model, device=device, mirror=options.mirror)
    settings = Settings(max_triangles=options.max_triangles, solid=options.solid, mirror=options.mirror, mesh=options.mesh)
    return Reconstructor(options.model, settings=settings, threads=threads, network=network)


def output_name(options: Options, key: str) -> Path:
    """The input's path below the root: its files are written there (by facevox.files.output_stem)."""
    return Path(os.path.relpath(key, options.root))


def process_batch(reconstructor, store, options: Options, items) -> list[dict]:
    """Reconstruct (key, bytes or None to read the file) items, write their files, then their index part."""
    from facevox.batch.index import write_part

    records = [process_one(reconstructor, store, options, key, data) for key, data in items]
    write_part(store, records)
    return records


def process_one(reconstructor, store, options: Options, key: str, data: bytes | None = None) -> dict:
    """One photo → its files and its index record. Never raises for a bad photo: it is recorded.
    A shared network process gone (NetworkServerError) is no fault of the photo: that is raised."""
    from facevox.batch.index import new_record
    from facevox.batch.store import write_bytes
    from facevox.files import write_face_files

    start, start_cpu = time.perf_counter(), time.process_time()
    record = new_record(key) | {"worker": f"{socket.gethostname()}:{os.getpid()}"}
    try:
        source = key if data is None else io.BytesIO(data)
        if data is not None:
            source.name = key
        faces = reconstructor.reconstruct(source, all_faces=options.all_faces)
        timings = dict(reconstructor.timings)
        mark = time.perf_counter()
        written = write_face_files(reconstructor, faces, output_name(options, key), None, list(options.formats),
                                   False, options.size_mm, write=partial(write_bytes, store), mesh=options.mesh)
        timings["write"] = time.perf_counter() - mark
        record.update(outputs=[p.as_posix() for p in written], faces=len(faces),
                      boxes=[f.box.tolist() for f in faces], scores=[f.score for f in faces],
                      landmarks_3d=[f.landmarks_3d.tolist() for f in faces],
                      yaw=[f.yaw for f in faces], pitch=[f.pitch for f in faces], roll=[f.roll for f in faces],
                      **{f"time_{stage}": seconds for stage, seconds in timings.items()})
    except NoFaceError as error:
        record.update(status="no face", reason=str(error))
    except FacevoxError as error:
        record.update(status="failed", reason=str(error))
    except NetworkServerError:
        raise
    except Exception as error:  # one bad photo never stops a batch
        record.update(status="failed", reason=f"{type(error).__name__}: {error}")
    record.update(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - start_cpu,
                  finished=datetime.now(timezone.utc))
    return record
