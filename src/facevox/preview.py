"""A shaded picture of a mesh with numpy alone (no display, no GPU): for `--preview` and the docs.

Triangles are sampled densely and drawn through a z-buffer; light is Lambertian from the viewer's
upper left. The mesh is turned about the vertical axis through its centre by `yaw` degrees.
"""

from __future__ import annotations

import numpy as np

from facevox.face import Mesh
from facevox.pose import rotation_matrix


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    face = np.cross(b - a, c - a)
    normals = np.zeros_like(vertices)
    for i in range(3):
        np.add.at(normals, triangles[:, i], face)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def render(mesh: Mesh, size: int = 512, yaw: float = 0.0, colour: bool = True, background=(244, 244, 244)) -> np.ndarray:
    """(size, size, 3) uint8 picture of the mesh (photo frame: x right, y down, z away) seen from the front,
    turned by `yaw` degrees (positive shows the face's left cheek)."""
    picture = np.empty((size, size, 3), np.uint8)
    picture[:] = background
    if len(mesh.triangles) == 0:
        return picture
    centre = (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
    # Turn in the model frame (y up, z towards the viewer), then back to the picture frame.
    flip = np.array([1.0, -1.0, -1.0])
    turn = rotation_matrix(yaw, 0.0, 0.0)
    points = (((mesh.vertices - centre) * flip) @ turn.T) * flip
    normals = ((vertex_normals(mesh.vertices, mesh.triangles) * flip) @ turn.T) * flip
    extent = np.ptp(points[:, :2], axis=0).max()
    scale = 0.9 * size / max(extent, 1e-9)
    xy = points[:, :2] * scale + size / 2
    depth = points[:, 2]

    light = np.array([-0.4, -0.5, -1.0])
    light /= np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.clip(normals @ light, 0, 1)
    albedo = mesh.colours / 255.0 if colour and mesh.colours is not None else np.full((len(points), 3), 0.78)
    vertex_rgb = albedo * shade[:, None]

    # Sample each triangle on a barycentric grid fine enough for its size on screen.
    corners = xy[mesh.triangles]
    longest = np.max(np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2))
    steps = int(np.clip(np.ceil(longest * 1.5), 1, 12))
    i, j = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1), indexing="ij")
    keep = i + j <= steps
    weights = np.stack([i[keep], j[keep], steps - i[keep] - j[keep]], 1) / steps  # (s, 3)
    tri = mesh.triangles
    sx = weights @ xy[tri][:, :, 0].T
    sy = weights @ xy[tri][:, :, 1].T
    sz = weights @ depth[tri].T
    rgb = np.einsum("sk,tkc->stc", weights, vertex_rgb[tri])
    cols, rows = np.round(sx).astype(np.int64).ravel(), np.round(sy).astype(np.int64).ravel()
    sz, rgb = sz.ravel(), rgb.reshape(-1, 3)
    inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
    pixel = rows[inside] * size + cols[inside]
    sz, rgb = sz[inside], rgb[inside]
    order = np.argsort(-sz)  # far to near: the nearest sample is written last and wins
    flat = picture.reshape(-1, 3)
    flat[pixel[order]] = np.clip(rgb[order] * 255 + 0.5, 0, 255).astype(np.uint8)
    return picture


def contact_sheet(mesh: Mesh, size: int = 384, yaws=(0.0, 40.0, 75.0), colour: bool = True) -> np.ndarray:
    """The mesh from several angles side by side, with and without colour."""
    rows = [np.concatenate([render(mesh, size, yaw, colour=c) for yaw in yaws], axis=1) for c in ((True, False) if colour else (False,))]
    return np.concatenate(rows, axis=0)


def save_png(picture: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 picture."""
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(picture[:, :, ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()
