"""The fitted head: recovery of a known ICT head, fixed topology, a texture without holes."""

import numpy as np
import pytest

from facevox import head
from facevox.pose import rotation_matrix

NARROW_FACE = 6706  # source vertices 0..6705: the narrow face area the network sees


def render_depth(vertices: np.ndarray, triangles: np.ndarray, size: int, steps: int = 6) -> np.ndarray:
    """Depth map (+inf off the mesh) of a mesh in pixel coordinates, by splatting each triangle's
    barycentric grid (dense enough for triangles of a few pixels)."""
    i, j = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1), indexing="ij")
    keep = i + j <= steps
    weights = np.stack([i[keep], j[keep], steps - i[keep] - j[keep]], 1) / steps
    points = np.einsum("sk,tkc->tsc", weights, vertices[triangles]).reshape(-1, 3)
    col, row = np.round(points[:, 0]).astype(int), np.round(points[:, 1]).astype(int)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    depth = np.full(size * size, np.inf)
    np.minimum.at(depth, row[inside] * size + col[inside], points[inside, 2])
    return depth.reshape(size, size)


def synthetic_face(model, seed: int, yaw: float = 20.0, size: int = 192):
    """A random ICT head placed in a crop-like frame, its 68 landmarks and the depth of its narrow face."""
    rng = np.random.default_rng(seed)
    identity = np.clip(rng.normal(0, 0.7, len(model.identity)), -2, 2)
    expression = np.zeros(len(model.expression))
    expression[rng.choice(len(expression), 3, replace=False)] = rng.uniform(0.2, 0.7, 3)
    rotation = np.diag([1.0, -1.0, -1.0]) @ rotation_matrix(yaw, 8.0, -5.0)
    truth = head.Fit(identity, expression, 0.9, rotation, np.array([96.0, 100.0, 100.0]))
    vertices = truth.place(model.shape(identity, expression).astype(np.float64))
    face_triangles = model.triangles[(model.vertex_source[model.triangles] < NARROW_FACE).all(1)]
    return truth, vertices, vertices[model.landmarks68], render_depth(vertices, face_triangles, size)


@pytest.mark.parametrize("seed,yaw", [(1, 0.0), (2, 25.0), (3, -50.0)])
def test_fit_recovers_a_known_head(seed, yaw):
    model = head.load_model()
    truth, vertices, landmarks, depth = synthetic_face(model, seed, yaw)
    fit = head.fit_surface(model, landmarks, depth)
    fitted = fit.place(model.shape(fit.identity, fit.expression).astype(np.float64))
    face = model.vertex_source < NARROW_FACE
    interocular = np.linalg.norm(landmarks[36] - landmarks[45])
    error = np.linalg.norm(fitted[face] - vertices[face], axis=1).mean() / interocular
    start = np.linalg.norm(model.shape(np.zeros(len(model.identity)), np.zeros(53)) * truth.scale @ truth.rotation.T + truth.translation - vertices, axis=1)[face].mean() / interocular
    print(f"error {error:.4f} of the interocular distance (mean head placed exactly: {start:.4f})")
    assert error < 0.03
    assert error < start / 2


@pytest.fixture(scope="module")
def astronaut_heads():
    """The bundled astronaut photo and a mirrored, shifted copy, each reconstructed and fitted."""
    from pathlib import Path

    import facevox
    from facevox.image import load_image

    photo = load_image(Path(facevox.__file__).parent / "examples" / "astronaut.jpg")
    mirrored = np.full((photo.shape[0] + 40, photo.shape[1] + 60, 3), 128, np.uint8)
    mirrored[40:, 60:] = photo[:, ::-1]
    recon = facevox.Reconstructor()
    return [(p, head.fit_head(recon(p)[0], p)) for p in (photo, mirrored)]


def test_heads_share_topology_and_vertex_order(astronaut_heads):
    (photo, first), (_, second) = astronaut_heads
    model = head.load_model()
    assert first.vertices.shape == second.vertices.shape == (len(model.vertex_source), 3)
    assert np.array_equal(first.faces, second.faces) and np.array_equal(first.uvs, second.uvs)
    assert first.blendshapes.shape == (53, len(first.vertices), 3) and len(first.blendshape_names) == 53
    assert ((first.expression >= 0) & (first.expression <= 1)).all()
    # Same order: vertex i of the mirrored photo's head is the mirror image of vertex mirror[i] of the first.
    face = model.regions["face"]
    expected_x = photo.shape[1] - 1 + 60 - first.vertices[model.mirror[face], 0]
    expected_y = first.vertices[model.mirror[face], 1] + 40
    width = np.ptp(first.vertices[face, 0])
    assert np.median(np.abs(second.vertices[face, 0] - expected_x)) < 0.03 * width
    assert np.median(np.abs(second.vertices[face, 1] - expected_y)) < 0.03 * width


def test_head_lies_on_the_face(astronaut_heads):
    (photo, first), _ = astronaut_heads
    import facevox

    face = facevox.reconstruct(photo)[0]
    size = np.ptp(face.landmarks_2d, axis=0).max()
    assert np.linalg.norm(first.landmarks_3d[17:, :2] - face.landmarks_2d[17:], axis=1).mean() < 0.05 * size


def test_texture_has_no_holes_in_its_islands():
    """With a photo of one colour, every skin texel, seen, mirrored or filled, must be that colour."""
    model = head.load_model()
    _, vertices, _, _ = synthetic_face(model, 5, 30.0)
    colour = np.array([40, 180, 90])
    photo = np.empty((192, 192, 3), np.uint8)
    photo[:] = colour
    texture = head.make_texture(model, vertices, photo, 512, scale=0.9)
    triangles, _, _ = head.uv_raster(model, 512)
    skin = np.ones(len(model.uvs), bool)
    skin[model.regions["eyes"]] = skin[model.regions["mouth_interior"]] = False
    covered = triangles >= 0
    skin_texels = covered & skin[model.triangles[np.maximum(triangles, 0)]].all(1)
    assert skin_texels.sum() > 0.3 * 512 * 512
    assert (np.abs(texture.reshape(-1, 3)[skin_texels].astype(int) - colour).max(1) <= 1).all()


def test_photo_is_used_only_inside_the_network_surface():
    """The texture takes the photo only where the crop's surface is: not beyond the crop's edge, even
    below a surface that reaches it (the sampling clamps to the edge)."""
    depth = np.full((192, 192), np.inf)
    depth[40:, 60:130] = 50.0  # a face surface down to the crop's bottom edge
    crop_matrix = np.array([[0.5, 0, 10], [0, 0.5, 20], [0, 0, 1]])  # photo → crop: half size, shifted
    weight = head._surface_weight(depth, crop_matrix)
    photo_of = lambda x, y: ((np.array([x]) - 10) / 0.5, (np.array([y]) - 20) / 0.5)  # crop point → photo point
    assert weight(*photo_of(95, 120))[0] == pytest.approx(1, abs=1e-3)  # inside the surface
    assert weight(*photo_of(95, 191))[0] > 0.1  # the surface at the crop's edge
    assert weight(*photo_of(95, 195))[0] == 0  # just below the crop
    assert weight(*photo_of(95, 400))[0] == 0  # far below it
    assert weight(*photo_of(20, 120))[0] == 0  # beside the surface


def test_uv_raster_covers_every_triangle():
    """Random points inside every UV triangle fall on texels the raster gives a triangle."""
    model = head.load_model()
    size = 512
    triangles, weights, _ = head.uv_raster(model, size)
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(3), len(model.triangles))
    uv = np.einsum("tk,tkc->tc", w, model.uvs[model.triangles])
    col = np.clip((uv[:, 0] * size).astype(int), 0, size - 1)
    row = np.clip(((1 - uv[:, 1]) * size).astype(int), 0, size - 1)
    assert (triangles[row * size + col] >= 0).all()
    assert np.allclose(weights[triangles >= 0].sum(1), 1, atol=1e-5)


def test_blendshapes_move_with_the_head(astronaut_heads):
    """jawOpen lowers the chin (y down in the photo) on both heads, by the model's offset times the scale."""
    model = head.load_model()
    jaw = model.expression_names.index("jawOpen")
    chin = model.landmarks68[8]
    model_drop = -model.expression[jaw, model.vertex_source[chin], 1]  # model frame: y up
    for _, fitted in astronaut_heads:
        offset = fitted.blendshapes[jaw, chin]
        assert offset[1] > 0.8 * fitted.scale * model_drop
        # A turned, scaled copy of the model's offsets: every vertex's offset length is scale times the model's.
        lengths = np.linalg.norm(fitted.blendshapes[jaw], axis=1)
        model_lengths = np.linalg.norm(model.expression[jaw, model.vertex_source], axis=1)
        assert np.allclose(lengths, fitted.scale * model_lengths, rtol=1e-3, atol=1e-4)


def test_landmarks_alone_still_give_a_head():
    """No surface at all (an empty depth map): the fit rests on the 68 landmarks and the priors."""
    model = head.load_model()
    _, vertices, landmarks, _ = synthetic_face(model, 6, 15.0)
    fit = head.fit_surface(model, landmarks, head.depth_grid(np.zeros((0, 3))))
    fitted = fit.place(model.shape(fit.identity, fit.expression).astype(np.float64))
    interocular = np.linalg.norm(landmarks[36] - landmarks[45])
    assert np.isfinite(fitted).all()
    assert np.linalg.norm(fitted[model.landmarks68] - landmarks, axis=1)[17:].mean() < 0.1 * interocular
