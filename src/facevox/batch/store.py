"""Where a batch writes: a local folder, or a URL that pyarrow.fs (s3://, gs://, hdfs://, file://) or,
failing that, fsspec understands. Paths inside it are relative, '/'-separated."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePath


@dataclass(frozen=True)
class Store:
    fs: object  # a pyarrow.fs.FileSystem
    base: str
    local: bool  # a local folder: files are written atomically (temporary file, then rename)

    def path(self, relative) -> str:
        return f"{self.base}/{PurePath(relative).as_posix()}"


def open_store(out: str) -> Store:
    """The store for OUT (created if missing)."""
    import pyarrow.fs as pafs

    if "://" not in out:
        base = os.path.abspath(out)
        os.makedirs(base, exist_ok=True)
        return Store(pafs.LocalFileSystem(), base, True)
    try:
        fs, base = pafs.FileSystem.from_uri(out)
    except ValueError:  # a scheme pyarrow lacks (ArrowInvalid): fsspec may have it
        import fsspec

        spec_fs, base = fsspec.core.url_to_fs(out)
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(spec_fs))
    base = base.rstrip("/")
    fs.create_dir(base, recursive=True)
    return Store(fs, base, isinstance(fs, pafs.LocalFileSystem))


def write_bytes(store: Store, relative, data: bytes) -> None:
    """Write one file; on a local folder atomically. Object stores (S3, GCS) publish an object only once
    it is complete, so no partial file is seen there either."""
    path = store.path(relative)
    if store.local:
        from facevox.export import write_atomic

        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, data)
    else:
        with store.fs.open_output_stream(path) as stream:
            stream.write(data)
