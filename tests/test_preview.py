"""The preview renderer: a z-buffer at pixel centres, checked against the dense-sampling renderer it replaced."""

import numpy as np
import pytest

from facevox.face import Mesh
from facevox.pose import rotation_matrix
from facevox.preview import contact_sheet, render, renders, vertex_normals

BACKGROUND = (244, 244, 244)


def sampled_render(mesh: Mesh, size: int, yaw: float, colour: bool) -> np.ndarray:
    """The earlier renderer (about 1 s a picture): every triangle sampled on a barycentric grid as fine
    as the longest triangle on screen needs, samples drawn far to near. The reference the new one matches."""
    picture = np.empty((size, size, 3), np.uint8)
    picture[:] = BACKGROUND
    centre = (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
    flip = np.array([1.0, -1.0, -1.0])
    turn = rotation_matrix(yaw, 0.0, 0.0)
    points = (((mesh.vertices - centre) * flip) @ turn.T) * flip
    normals = ((vertex_normals(mesh.vertices, mesh.triangles) * flip) @ turn.T) * flip
    scale = 0.9 * size / np.ptp(points[:, :2], axis=0).max()
    xy = points[:, :2] * scale + size / 2
    light = np.array([-0.4, -0.5, -1.0])
    light /= np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.clip(normals @ light, 0, 1)
    albedo = mesh.colours / 255.0 if colour else np.full((len(points), 3), 0.78)
    vertex_rgb = albedo * shade[:, None]
    corners = xy[mesh.triangles]
    longest = np.max(np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2))
    steps = int(np.clip(np.ceil(longest * 1.5), 1, 12))
    i, j = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1), indexing="ij")
    keep = i + j <= steps
    weights = np.stack([i[keep], j[keep], steps - i[keep] - j[keep]], 1) / steps
    tri = mesh.triangles
    cols = np.round(weights @ xy[tri][:, :, 0].T).astype(np.int64).ravel()
    rows = np.round(weights @ xy[tri][:, :, 1].T).astype(np.int64).ravel()
    depth = (weights @ points[:, 2][tri].T).ravel()
    rgb = np.einsum("sk,tkc->stc", weights, vertex_rgb[tri]).reshape(-1, 3)
    inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
    pixel, depth, rgb = rows[inside] * size + cols[inside], depth[inside], rgb[inside]
    order = np.argsort(-depth)
    picture.reshape(-1, 3)[pixel[order]] = np.clip(rgb[order] * 255 + 0.5, 0, 255).astype(np.uint8)
    return picture


@pytest.fixture(scope="module")
def face_mesh(reconstructor, astronaut) -> Mesh:
    return reconstructor(astronaut, all_faces=False)[0].mesh


@pytest.mark.parametrize("yaw", [0.0, 40.0, 75.0])
@pytest.mark.parametrize("colour", [True, False])
def test_the_face_looks_as_the_sampled_renderer_drew_it(face_mesh, yaw, colour):
    new = render(face_mesh, 128, yaw, colour=colour).astype(float)
    old = sampled_render(face_mesh, 128, yaw, colour).astype(float)
    # Measured: 2.9-4.7 grey levels apart on average; a 40° turn or a grey picture differs by 17 or more.
    assert np.abs(new - old).mean() < 7
    drawn_new, drawn_old = (new != BACKGROUND).any(2), (old != BACKGROUND).any(2)
    assert (drawn_new == drawn_old).mean() > 0.97  # silhouettes agree but for edge pixels


def grid_plane(side: int, depth: float, rgb) -> Mesh:
    """A flat square of (side - 1)² × 2 triangles at one depth, all one colour, facing the camera."""
    y, x = np.mgrid[0:side, 0:side].astype(float)
    vertices = np.stack([x.ravel(), y.ravel(), np.full(x.size, depth)], 1)
    index = np.arange(side * side).reshape(side, side)
    a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel()
    triangles = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    return Mesh(vertices, triangles, np.tile(np.array(rgb, np.uint8), (len(vertices), 1)))


def test_triangles_smaller_than_a_pixel_leave_no_holes():
    picture = render(grid_plane(300, 0.0, (200, 100, 50)), size=64)
    inner = picture[8:56, 8:56].reshape(-1, 3)
    assert len(np.unique(inner, axis=0)) == 1 and (inner[0] != BACKGROUND).any()


def test_the_nearer_surface_hides_the_farther_whatever_their_order():
    near, far = grid_plane(10, 0.0, (250, 0, 0)), grid_plane(10, 5.0, (0, 0, 250))
    for first, second in ((near, far), (far, near)):
        both = Mesh(np.concatenate([first.vertices, second.vertices]),
                    np.concatenate([first.triangles, second.triangles + len(first.vertices)]),
                    np.concatenate([first.colours, second.colours]))
        red, _, blue = render(both, size=64)[32, 32].astype(int)
        assert red > 100 and blue == 0


def test_one_rasterisation_gives_the_coloured_and_grey_pictures(face_mesh):
    coloured, grey = renders(face_mesh, 96, 40.0)
    assert np.array_equal(coloured, render(face_mesh, 96, 40.0, colour=True))
    assert np.array_equal(grey, render(face_mesh, 96, 40.0, colour=False))
    assert contact_sheet(face_mesh, 96).shape == (192, 288, 3)


def test_an_empty_mesh_is_the_background():
    empty = Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), None)
    assert (render(empty, 32) == BACKGROUND).all()
