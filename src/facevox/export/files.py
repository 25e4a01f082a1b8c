"""The writers behind facevox.export's registry (GLB, OBJ and JSON written here; trimesh does PLY and STL).

Each mesh writer takes `mesh`: "head" (the fitted head, facevox.export.head), "surface" (the volumetric
surface), or None: the head when the face has one, else the surface."""

from __future__ import annotations

import io
import json
import struct

import numpy as np

from facevox.export import head
from facevox.face import Face, Mesh
from facevox.rules import RULES

EYE_CORNERS_MM = RULES["eye_corners_mm"]  # a typical adult's outer eye-corner distance (iBUG points 37 and 46)
FLIP = np.array([1.0, -1.0, -1.0])  # photo frame (y down, z away) → viewer frame (y up, z towards the viewer)
GL_TRIANGLES, GL_UNSIGNED_BYTE, GL_UNSIGNED_INT, GL_FLOAT = 4, 5121, 5125, 5126  # glTF's codes


def viewer_frame(face: Face, mesh: Mesh | None = None, size_mm: float | None = None):
    """(vertices, scale) of a mesh in the viewer frame, centred on the face, in millimetres.

    size_mm, if given, scales the mesh so that its largest extent is that many millimetres."""
    mesh = mesh or face.mesh
    eyes = np.linalg.norm(face.landmarks_3d[36] - face.landmarks_3d[45])
    scale = EYE_CORNERS_MM / max(eyes, 1e-9)
    surface = face.mesh.vertices
    # Column by column: numpy runs many times faster along the vertices than across three coordinates.
    centre = [(surface[:, j].min() + surface[:, j].max()) / 2 if len(surface) else 0.0 for j in range(3)]
    vertices = np.empty(mesh.vertices.shape)
    for j in range(3):
        vertices[:, j] = (mesh.vertices[:, j] - centre[j]) * (scale * FLIP[j])  # FLIP is ±1: as (v - c) * scale * FLIP
    if size_mm and len(vertices):
        vertices *= size_mm / np.ptp(vertices, axis=0).max()
    return vertices, scale


def _trimesh(face: Face, mesh: Mesh | None = None, size_mm: float | None = None, colours: bool = True):
    import trimesh

    mesh = mesh or face.mesh
    vertices, _ = viewer_frame(face, mesh, size_mm)
    # Flipping y and z is a proper rotation (180° about x), so the winding keeps normals outwards.
    body = trimesh.Trimesh(vertices, mesh.triangles, process=False)
    if colours and mesh.colours is not None:
        body.visual = trimesh.visual.ColorVisuals(body, vertex_colors=np.column_stack([mesh.colours, np.full(len(mesh.colours), 255, np.uint8)]))
    return body


MESHES = ("head", "surface")


def wants_head(face: Face, mesh: str | None) -> bool:
    """Whether a writer asked for `mesh` writes the head (see the module's docstring)."""
    if mesh not in (None, *MESHES):
        raise ValueError(f"unknown mesh {mesh!r}; choose from {', '.join(MESHES)}")
    if mesh == "head" and face.head is None:
        raise ValueError("this face has no head: reconstruct with Settings(mesh='head') or 'both'")
    return mesh == "head" or (mesh is None and face.head is not None)


def to_glb(face: Face, mesh: str | None = None, **_) -> bytes:
    """Binary glTF 2.0 of the head (facevox.export.head.head_glb) or of the surface in the viewer frame:
    triangles as uint32 indices, positions float32, colours (if any) RGBA uint8 normalised; with no triangles, a scene with an empty node."""
    if wants_head(face, mesh):
        return head.head_glb(face)
    mesh = face.mesh
    gltf = {"asset": {"version": "2.0", "generator": "facevox"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{}]}
    if not len(mesh.triangles):
        return _glb(gltf, [])
    positions = viewer_frame(face)[0].astype(np.float32)
    arrays = [mesh.triangles.astype(np.uint32), positions]
    accessors = [
        {"bufferView": 0, "componentType": GL_UNSIGNED_INT, "count": mesh.triangles.size, "type": "SCALAR"},
        {"bufferView": 1, "componentType": GL_FLOAT, "count": len(positions), "type": "VEC3",
         "min": [float(column.min()) for column in positions.T], "max": [float(column.max()) for column in positions.T]},
    ]
    attributes = {"POSITION": 1}
    if mesh.colours is not None:
        rgba = np.full((len(mesh.colours), 4), 255, np.uint8)
        rgba[:, :3] = mesh.colours
        arrays.append(rgba)
        accessors.append({"bufferView": 2, "componentType": GL_UNSIGNED_BYTE, "normalized": True, "count": len(rgba), "type": "VEC4"})
        attributes["COLOR_0"] = 2
    offsets = np.cumsum([0] + [a.nbytes for a in arrays]).tolist()  # every array's size is a multiple of 4
    gltf["nodes"][0]["mesh"] = 0
    gltf |= {
        "meshes": [{"primitives": [{"attributes": attributes, "indices": 0, "mode": GL_TRIANGLES}]}],
        "accessors": accessors,
        "bufferViews": [{"buffer": 0, "byteOffset": start, "byteLength": a.nbytes} for start, a in zip(offsets, arrays)],
        "buffers": [{"byteLength": offsets[-1]}],
    }
    return _glb(gltf, arrays)


def _glb(gltf: dict, arrays: list[np.ndarray]) -> bytes:
    """The GLB container: a 12-byte header, the JSON chunk (padded with spaces to 4 bytes) and, if
    there are arrays, the binary chunk of their bytes one after another."""
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    parts = [struct.pack("<II", len(text), 0x4E4F534A), text]  # "JSON"
    if arrays:
        parts.append(struct.pack("<II", sum(a.nbytes for a in arrays), 0x004E4942))  # "BIN\0"
        parts.extend(memoryview(np.ascontiguousarray(a)).cast("B") for a in arrays)
    length = 12 + sum(len(part) for part in parts)
    return b"".join([struct.pack("<4sII", b"glTF", 2, length), *parts])


def to_ply(face: Face, mesh: str | None = None, **_) -> bytes:
    if wants_head(face, mesh):
        return head.head_ply(face)
    return _trimesh(face).export(file_type="ply", encoding="binary")


def to_obj(face: Face, mesh: str | None = None, name: str | None = None, **_) -> bytes:
    """Wavefront OBJ with per-vertex colours (the widely read 'v x y z r g b' extension); the head's
    has UVs too, and with `name` uses the material NAME.mtl (facevox.export.export_files writes it)."""
    if wants_head(face, mesh):
        return head.head_obj(face, name)
    vertices, _ = viewer_frame(face)
    out = io.StringIO()
    out.write("# facevox mesh: y up, z towards the viewer, millimetres\n")
    colours = face.mesh.colours if face.mesh.colours is not None else np.full((len(vertices), 3), 200, np.uint8)
    rows = np.column_stack([vertices, colours / 255.0])
    np.savetxt(out, rows, fmt="v %.4f %.4f %.4f %.4f %.4f %.4f")
    np.savetxt(out, face.mesh.triangles + 1, fmt="f %d %d %d")
    return out.getvalue().encode()


def to_stl(face: Face, size_mm: float | None = None, mesh: str | None = None, **_) -> bytes:
    """Binary STL for 3D printing: the head closed watertight, or the surface's closed body (face cut
    flat behind; needs Face.extras['solid'])."""
    if wants_head(face, mesh):
        return head.head_stl(face, size_mm)
    solid = face.extras.get("solid")
    if solid is None:
        raise ValueError("STL needs the closed body: reconstruct with Settings(solid=True)")
    return _trimesh(face, solid, size_mm, colours=False).export(file_type="stl")


def to_json(face: Face, model: str | None = None, **_) -> bytes:
    """The face's box, score, landmarks and head pose (photo pixels; pose in degrees); "mesh" counts the
    surface; "head", when fitted, counts the head and gives its identity coefficients and its
    expression as blendshape weights (0 to 1) by ARKit name."""
    record = {
        "box": np.round(face.box, 2).tolist(),
        "score": round(float(face.score), 4),
        "pose": {"yaw": round(face.yaw, 2), "pitch": round(face.pitch, 2), "roll": round(face.roll, 2)},
        "landmarks_2d": np.round(face.landmarks_2d, 2).tolist(),
        "landmarks_3d": np.round(face.landmarks_3d, 2).tolist(),
        "mesh": {"vertices": int(len(face.mesh.vertices)), "triangles": int(len(face.mesh.triangles))},
        "model": model,
    }
    if face.head is not None:
        record["head"] = {
            "vertices": int(len(face.head.vertices)), "triangles": int(len(face.head.faces)),
            "identity": np.round(np.asarray(face.head.identity, np.float64), 4).tolist(),
            "expression": {name: round(float(w), 4) for name, w in zip(head.arkit_names(face.head.blendshape_names), face.head.expression)},
        }
    return (json.dumps(record, indent=1) + "\n").encode()
