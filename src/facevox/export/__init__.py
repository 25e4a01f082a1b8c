"""File stage: a reconstructed face → bytes of a mesh file, one writer per format in one registry.

Writers take a `Face` and return bytes. Meshes are stored in a viewer's frame: y up, z towards the
viewer, centred on the face, in millimetres by default (the face's outer eye-corner distance taken as
93 mm, a typical adult's), so files open the right way up and the right size in any 3D tool.
`mesh="head"` or `"surface"` picks the mesh (default: the fitted head when the face has one).

A writer returns one file. A format whose file refers to others (the head's OBJ: its material and
texture) gets them from export_files, which names them all.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from facevox.export.files import MESHES, to_glb, to_json, to_obj, to_ply, to_stl, wants_head

WRITERS = {"glb": to_glb, "ply": to_ply, "obj": to_obj, "stl": to_stl, "json": to_json}
MEDIA_TYPES = {
    "glb": "model/gltf-binary", "ply": "application/octet-stream", "obj": "text/plain",
    "stl": "model/stl", "json": "application/json",
}
FORMATS = tuple(WRITERS)


def export(face, fmt: str, **options) -> bytes:
    """The face as a file of format `fmt` (one of FORMATS)."""
    try:
        writer = WRITERS[fmt.lower()]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}") from None
    return writer(face, **options)


def export_files(face, fmt: str, name: str, **options) -> dict[str, bytes]:
    """The files of one format, by file name: NAME.FMT, and beside the head's OBJ the material NAME.mtl
    and the texture NAME.png that it refers to."""
    from facevox.export.head import head_obj_material

    files = {f"{name}.{fmt.lower()}": export(face, fmt, name=name, **options)}
    if fmt.lower() == "obj" and wants_head(face, options.get("mesh")):
        files |= head_obj_material(face, name)
    return files


_UMASK = os.umask(0o022)  # read once (reading it means setting it), and put back
os.umask(_UMASK)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: no half-written file is ever left."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes it private; a plain open() would not
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
