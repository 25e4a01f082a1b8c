"""The writers behind facevox.export's registry (trimesh does the file formats)."""

from __future__ import annotations

import io
import json

import numpy as np

from facevox.face import Face, Mesh

EYE_CORNERS_MM = 93.0  # a typical adult's outer eye-corner distance (iBUG points 37 and 46)
FLIP = np.array([1.0, -1.0, -1.0])  # photo frame (y down, z away) → viewer frame (y up, z towards the viewer)


def viewer_frame(face: Face, mesh: Mesh | None = None, size_mm: float | None = None):
    """(vertices, scale) of a mesh in the viewer frame, centred on the face, in millimetres.

    size_mm, if given, scales the mesh so that its largest extent is that many millimetres."""
    mesh = mesh or face.mesh
    eyes = np.linalg.norm(face.landmarks_3d[36] - face.landmarks_3d[45])
    scale = EYE_CORNERS_MM / max(eyes, 1e-9)
    centre = (face.mesh.vertices.min(0) + face.mesh.vertices.max(0)) / 2 if len(face.mesh.vertices) else np.zeros(3)
    vertices = (mesh.vertices - centre) * scale * FLIP
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


def to_glb(face: Face, **_) -> bytes:
    return _trimesh(face).export(file_type="glb")


def to_ply(face: Face, **_) -> bytes:
    return _trimesh(face).export(file_type="ply", encoding="binary")


def to_obj(face: Face, **_) -> bytes:
    """Wavefront OBJ with per-vertex colours (the widely read 'v x y z r g b' extension)."""
    vertices, _ = viewer_frame(face)
    out = io.StringIO()
    out.write("# facevox mesh: y up, z towards the viewer, millimetres\n")
    colours = face.mesh.colours if face.mesh.colours is not None else np.full((len(vertices), 3), 200, np.uint8)
    rows = np.column_stack([vertices, colours / 255.0])
    np.savetxt(out, rows, fmt="v %.4f %.4f %.4f %.4f %.4f %.4f")
    np.savetxt(out, face.mesh.triangles + 1, fmt="f %d %d %d")
    return out.getvalue().encode()


def to_stl(face: Face, size_mm: float | None = None, **_) -> bytes:
    """Binary STL of the closed body (face cut flat behind), for 3D printing; needs Face.extras['solid']."""
    solid = face.extras.get("solid")
    if solid is None:
        raise ValueError("STL needs the closed body: reconstruct with Settings(solid=True)")
    return _trimesh(face, solid, size_mm, colours=False).export(file_type="stl")


def to_json(face: Face, model: str | None = None, **_) -> bytes:
    """The face's box, score, landmarks and head pose (photo pixels; pose in degrees)."""
    record = {
        "box": np.round(face.box, 2).tolist(),
        "score": round(float(face.score), 4),
        "pose": {"yaw": round(face.yaw, 2), "pitch": round(face.pitch, 2), "roll": round(face.roll, 2)},
        "landmarks_2d": np.round(face.landmarks_2d, 2).tolist(),
        "landmarks_3d": np.round(face.landmarks_3d, 2).tolist(),
        "mesh": {"vertices": int(len(face.mesh.vertices)), "triangles": int(len(face.mesh.triangles))},
        "model": model,
    }
    return (json.dumps(record, indent=1) + "\n").encode()
