"""A shaded picture of a mesh with numpy alone (no display, no GPU): for `--preview` and the docs.

Triangles are rasterised at pixel centres through a z-buffer, vertex colours interpolated across
them; light is Lambertian from the viewer's upper left. The mesh is turned about the vertical axis
through its centre by `yaw` degrees.
"""

from __future__ import annotations

import numpy as np

from facevox.face import Mesh
from facevox.pose import rotation_matrix


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    face = np.cross(b - a, c - a)
    corners = triangles.ravel()
    normals = np.stack([np.bincount(corners, np.repeat(face[:, k], 3), len(vertices)) for k in range(3)], 1)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def render(mesh: Mesh, size: int = 512, yaw: float = 0.0, colour: bool = True, background=(244, 244, 244)) -> np.ndarray:
    """(size, size, 3) uint8 picture of the mesh (photo frame: x right, y down, z away) seen from the front,
    turned by `yaw` degrees (positive shows the face's left cheek); grey where `colour` is False."""
    return renders(mesh, size, yaw, (colour,), background)[0]


def renders(mesh: Mesh, size: int = 512, yaw: float = 0.0, colours=(True, False), background=(244, 244, 244)) -> list[np.ndarray]:
    """`render`'s picture for each entry of `colours` from one rasterisation."""
    pictures = [np.empty((size, size, 3), np.uint8) for _ in colours]
    for picture in pictures:
        picture[:] = background
    if len(mesh.triangles) == 0:
        return pictures
    centre = (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
    # Turn in the model frame (y up, z towards the viewer), then back to the picture frame.
    flip = np.array([1.0, -1.0, -1.0])
    turn = rotation_matrix(yaw, 0.0, 0.0)
    points = (((mesh.vertices - centre) * flip) @ turn.T) * flip
    normals = ((vertex_normals(mesh.vertices, mesh.triangles) * flip) @ turn.T) * flip
    extent = np.ptp(points[:, :2], axis=0).max()
    scale = 0.9 * size / max(extent, 1e-9)
    xy = points[:, :2] * scale + size / 2
    pixel, triangle, weights = rasterise(xy, points[:, 2], mesh.triangles, size)
    corners = mesh.triangles[triangle]

    light = np.array([-0.4, -0.5, -1.0])
    light /= np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.clip(normals @ light, 0, 1)
    for picture, colour in zip(pictures, colours):
        albedo = mesh.colours / 255.0 if colour and mesh.colours is not None else np.full((len(points), 3), 0.78)
        rgb = np.einsum("kp,pkc->pc", weights, (albedo * shade[:, None])[corners])
        picture.reshape(-1, 3)[pixel] = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    return pictures


def rasterise(xy: np.ndarray, depth: np.ndarray, triangles: np.ndarray, size: int):
    """Z-buffer of triangles on a size × size grid of pixel centres (pixel (c, r) at x = c, y = r).

    Returns, for each covered pixel, its flat index, the nearest (smallest depth) triangle covering
    its centre, and that triangle's barycentric weights there, (3, p).
    """
    x, y = xy[triangles.T, 0], xy[triangles.T, 1]  # (3, t): the corners
    left, top = (np.clip(np.ceil(v.min(0)), 0, size).astype(np.int64) for v in (x, y))
    width, height = (np.clip(np.floor(v.max(0)), -1, size - 1).astype(np.int64) + 1 - low for v, low in ((x, left), (y, top)))
    area = (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])
    drawn = np.flatnonzero((width > 0) & (height > 0) & (np.abs(area) > 1e-12))
    x, y, area, left, top, width = x[:, drawn], y[:, drawn], area[drawn], left[drawn], top[drawn], width[drawn]
    # Each corner's barycentric weight as a plane a·col + b·row + c over its triangle.
    following, preceding = [1, 2, 0], [2, 0, 1]
    a = (y[following] - y[preceding]) / area
    b = (x[preceding] - x[following]) / area
    c = (x[following] * y[preceding] - x[preceding] * y[following]) / area
    # Every pixel centre in each drawn triangle's bounding box.
    count = width * height[drawn]
    triangle = np.repeat(np.arange(len(drawn)), count)
    local = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    row, col = np.divmod(local, width[triangle])
    col += left[triangle]
    row += top[triangle]
    weights = a[:, triangle] * col + b[:, triangle] * row + c[:, triangle]
    inside = (weights >= -1e-9).all(0)  # a centre on a shared edge counts for both triangles
    triangle, weights = triangle[inside], weights[:, inside]
    pixel = row[inside] * size + col[inside]
    triangle = drawn[triangle]
    nearness = (weights * depth[triangles[triangle]].T).sum(0)
    nearest = np.full(size * size, np.inf)
    np.minimum.at(nearest, pixel, nearness)
    front = nearness <= nearest[pixel]
    return pixel[front], triangle[front], weights[:, front]


def contact_sheet(mesh: Mesh, size: int = 384, yaws=(0.0, 40.0, 75.0), colour: bool = True) -> np.ndarray:
    """The mesh from several angles side by side, with and without colour."""
    views = [renders(mesh, size, yaw, (True, False) if colour else (False,)) for yaw in yaws]
    return np.concatenate([np.concatenate(row, axis=1) for row in zip(*views)], axis=0)


def save_png(picture: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 picture."""
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(picture[:, :, ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()
