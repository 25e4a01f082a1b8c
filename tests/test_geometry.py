"""Crop rule, head pose and volume → mesh on volumes whose answer is known."""

import numpy as np
import pytest

from facevox import crop, mesh, pose
from facevox.face import Mesh


def dome_volume(depth=200, size=192, radius=60.0, centre_depth=100.0):
    """A half ball facing the camera, filled to the back of the volume (like the network's volumes);
    returns the volume and its front-depth map."""
    ys, xs = np.mgrid[0:size, 0:size]
    r = np.hypot(xs - size / 2, ys - size / 2)
    front = np.where(r < radius, centre_depth - np.sqrt(np.clip(radius**2 - r**2, 0, None)), np.inf)
    k = np.arange(depth)[:, None, None]
    return np.clip(k - front[None] + 0.5, 0, 1).astype(np.float32), front


def test_crop_matrix_centres_the_box_and_inverts():
    box = (100.0, 50.0, 200.0, 170.0)
    matrix = crop.crop_matrix(box, 192)
    height = box[3] - box[1]
    centre = np.array([[150.0, 110.0 + crop.CROP_SHIFT_Y * height]])
    assert np.allclose(crop.apply(matrix, centre), [[95.5, 95.5]])
    points = np.array([[3.0, 4.0], [250.0, 90.0]])
    assert np.allclose(crop.apply(crop.invert(matrix), crop.apply(matrix, points)), points)
    with pytest.raises(ValueError):
        crop.crop_matrix((10, 10, 10, 30))


@pytest.mark.parametrize("angles", [(0, 0, 0), (40, -10, 5), (-75, 20, -25)])
def test_pose_angles_round_trip_and_head_pose(angles):
    rotation = pose.rotation_matrix(*angles)
    assert np.allclose(pose.angles(rotation), angles, atol=1e-6)
    model = np.random.default_rng(0).normal(size=(68, 3)) * 40
    photo = (model @ rotation.T) * np.array([1.0, -1.0, -1.0]) * 2.5 + [300.0, 200.0, 50.0]
    assert np.allclose(pose.head_pose(photo, model), angles, atol=1e-6)


def test_front_depth_recovers_the_training_occupancy():
    torch = pytest.importorskip("torch")
    from training.voxels import occupancy

    rng = np.random.default_rng(7)
    depth = rng.uniform(0.0, 30.0, (9, 11))
    depth[0, 0], depth[0, 1], depth[0, 2] = 4.0, 4.5, 0.0
    mask = rng.random((9, 11)) > 0.2
    mask[0, :3] = True
    volume = occupancy(torch.from_numpy(np.where(mask, depth, np.inf)).float()[None], torch.from_numpy(mask)[None], 40)[0].numpy()
    got, got_mask = mesh.front_depth(volume)
    assert np.array_equal(got_mask, mask) and np.isinf(got[~mask]).all()
    assert np.abs(got[mask] - depth[mask]).max() < 0.09  # linear interpolation of a unit ramp
    soft = np.clip((np.arange(40.0)[:, None, None] - depth[None]) / 8 + 0.5, 0, 1)  # an 8-voxel ramp
    assert np.allclose(mesh.front_depth(soft)[0], depth, atol=1e-6)


def test_height_field_of_a_plane():
    depth = np.full((5, 6), 7.0)
    mask = np.zeros((5, 6), bool)
    mask[1:4, 1:5] = True  # 3 × 4 covered pixels: 2 × 3 blocks → 12 triangles
    mask[0, 0] = True  # isolated pixel: a vertex, no triangle
    mask[4, 4] = mask[4, 5] = True  # two blocks with three covered corners → one triangle each
    surface = mesh.height_field(depth, mask)
    assert len(surface.vertices) == 15 and len(surface.triangles) == 14
    assert np.allclose(surface.vertices[:, 2], 7.0)
    assert np.allclose(mesh.face_normals(surface.vertices, surface.triangles), [0, 0, -1])  # towards the camera


def test_surface_mesh_faces_the_camera_and_lies_on_the_surface():
    volume, _ = dome_volume()
    surface = mesh.surface_mesh(volume)
    assert len(surface.triangles) > 10000
    normals = mesh.face_normals(surface.vertices, surface.triangles)
    assert (normals[:, 2] < 0).all()  # every triangle faces the camera (−z)
    # Vertices sit on the dome's front surface within a tenth of a voxel, away from its steep rim.
    xs, ys, ks = surface.vertices.T
    r = np.hypot(xs - 96, ys - 96)
    inside = r < 55
    assert np.abs(ks[inside] - (100 - np.sqrt(60**2 - r[inside] ** 2))).max() < 0.1
    assert ks.max() < 100.5


def test_outline_spikes_are_limited_and_occlusion_steps_kept():
    """Columns along the outline that first fill far back are pulled forward; a step inside stays."""
    depth = np.full((40, 40), 20.0)
    depth[:, 20:] = 60.0  # an occlusion edge: the right half lies 40 voxels behind the left
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    depth[5, 10], depth[20, 34] = 150.0, 190.0  # stray deep columns on the outline
    limited = mesh.limit_outline(depth, mask)
    assert limited[5, 10] == 24.0 and limited[20, 34] == 64.0
    assert np.array_equal(limited[10:30, 10:30], depth[10:30, 10:30])


def test_surface_leaves_out_triangles_across_depth_jumps():
    """A thin deep slit (the line between the lips on a turned face) and an occlusion step give no
    triangle spanning more than MAX_JUMP voxels: the slit's columns go, both sides of the step stay; a
    slope of 5 voxels a pixel (a steep cheek) keeps all its triangles."""
    ys, xs = np.mgrid[0:60, 0:60]
    mask = (xs - 30) ** 2 + (ys - 30) ** 2 < 27**2
    depth = 40.0 + 5.0 * np.maximum(xs - 40, 0)  # flat, then 5 voxels a pixel
    whole = mesh.surface_from_depth(depth, mask)
    assert len(whole.triangles) == len(mesh.height_field(mesh.limit_outline(depth, mask), mask).triangles)

    cut = depth.copy()
    cut[30, 5:25] = 120.0  # a one-row slit, 80 voxels deep
    cut[:, 28:] += 30.0  # an occlusion step down the middle
    surface = mesh.surface_from_depth(cut, mask)
    assert np.ptp(surface.vertices[:, 2][surface.triangles], axis=1).max() <= mesh.MAX_JUMP
    kept = {tuple(v) for v in surface.vertices[:, :2].astype(int)}
    assert not any((x, 30) in kept for x in range(8, 25))  # the slit's columns are gone
    assert (15, 15) in kept and (50, 30) in kept and (20, 45) in kept  # both sides of the step stay
    assert surface.triangles.max() < len(surface.vertices)


def test_solid_mesh_is_watertight_with_outward_normals():
    import trimesh

    volume, _ = dome_volume()
    solid = mesh.solid_mesh(volume)
    body = trimesh.Trimesh(solid.vertices, solid.triangles, process=False)
    assert body.is_watertight
    assert body.volume > 0  # positive volume: normals point out of the body
    half_ball = 2 / 3 * np.pi * 60**3
    assert 0.8 * half_ball < body.volume < 1.3 * half_ball


def test_empty_volume_gives_empty_mesh():
    for volume in (np.zeros((20, 16, 16), np.float32), np.pad(np.ones((20, 1, 1), np.float32), ((0, 0), (3, 3), (3, 3)))):
        empty = mesh.surface_mesh(volume)  # nothing, or one column: no triangle
        assert len(empty.vertices) == 0 and len(empty.triangles) == 0


def test_to_photo_and_colours():
    matrix = crop.crop_matrix((100, 100, 196, 196), 192)  # 2 crop pixels per photo pixel
    crop_mesh = Mesh(np.array([[95.5, 95.5, 10.0], [0.0, 0.0, 0.0], [191.0, 0.0, 20.0]]), np.array([[0, 1, 2]]))
    photo = mesh.to_photo(crop_mesh, matrix)
    scale = matrix[0, 0]
    assert np.allclose(photo.vertices[0], [148.0, 148.0 + crop.CROP_SHIFT_Y * 96, 10.0 / scale])
    image = np.zeros((300, 300, 3), np.uint8)
    image[:, :150] = (255, 0, 0)
    image[:, 150:] = (0, 0, 255)
    coloured = mesh.colour_from_photo(Mesh(np.array([[10.0, 5.0, 0], [290.0, 5.0, 0], [149.5, 5.0, 0]]), np.zeros((0, 3), int)), image)
    assert coloured.colours.tolist()[:2] == [[255, 0, 0], [0, 0, 255]]
    assert coloured.colours[2].tolist() == [128, 0, 128]


def test_decimate_keeps_colours_and_bounds():
    volume, _ = dome_volume()
    surface = mesh.surface_mesh(volume)
    surface = Mesh(surface.vertices, surface.triangles, np.full((len(surface.vertices), 3), 7, np.uint8))
    small = mesh.decimate(surface, 2000)
    assert len(small.triangles) < 0.15 * len(surface.triangles)  # the outline is kept, so not quite 2000
    assert small.colours.shape == (len(small.vertices), 3) and (small.colours == 7).all()
    assert np.allclose(small.vertices.min(0), surface.vertices.min(0), atol=2)


def test_surface_mesh_keeps_every_large_piece_and_drops_islands():
    """A face's outline can come in large pieces (e.g. cut by a gap): none may be dropped."""
    ys, xs = np.mgrid[0:96, 0:96]
    front = np.where((xs - 48) ** 2 / 40**2 + (ys - 48) ** 2 / 40**2 < 1, np.where(xs < 48, 40.0, 90.0), np.inf)
    front[:, 47:49] = np.inf  # a gap between the two halves
    front[70:74, 20:24] = np.inf  # a hole, and a small island of columns inside it: dropped
    front[71:73, 21:23] = 10.0
    k = np.arange(120)[:, None, None]
    volume = np.clip(k - front[None] + 0.5, 0, 1).astype(np.float32)
    surface = mesh.surface_mesh(volume)
    xs, ks = surface.vertices[:, 0], surface.vertices[:, 2]
    assert (np.abs(ks[xs < 46] - 40) <= 1).mean() > 0.95 and (xs < 46).sum() > 1000
    assert (np.abs(ks[xs > 50] - 90) <= 1).mean() > 0.95 and (xs > 50).sum() > 1000
    assert not ((ks < 30).any())


def triangle_pieces_reference(depth, mask, share):
    """The height field's pieces by vertices shared between triangles (a sparse graph): the slow,
    plain definition that `mesh.large_pieces` must agree with."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    surface = mesh.height_field(depth, mask)
    triangles = surface.triangles
    if len(triangles) == 0:
        return np.zeros((0, 3)), triangles
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(surface.vertices),) * 2)
    labels = connected_components(graph, directed=False)[1][triangles[:, 0]]
    sizes = np.bincount(labels)
    kept = triangles[sizes[labels] >= share * sizes.max()]
    used, remap = np.unique(kept, return_inverse=True)
    return surface.vertices[used], remap.reshape(-1, 3)


@pytest.mark.parametrize("seed", range(6))
def test_large_pieces_match_the_triangles_shared_vertices(seed):
    """Random masks have many pieces, diagonal contacts through masked and unmasked pixels, and lone pixels."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        h, w = rng.integers(2, 30, 2)
        mask = rng.random((h, w)) < rng.uniform(0.3, 0.9)
        depth = np.where(mask, rng.uniform(0, 50, (h, w)), np.inf)
        for share in (1.0, mesh.PIECE_SHARE, 0.5, 0.0):
            vertices, triangles = triangle_pieces_reference(depth, mask, share)
            surface = mesh.height_field(depth, mesh.large_pieces(mask, share))
            assert np.array_equal(surface.vertices, vertices) and np.array_equal(surface.triangles, triangles)


def test_diagonal_blocks_join_only_through_a_masked_pixel():
    """2×2 blocks that touch at a corner are one piece when that pixel is masked (a shared vertex)."""
    joined = np.array([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [0, 0, 1, 1]], bool)  # blocks (0, 0), (1, 1) share (1, 1)
    assert np.array_equal(mesh.large_pieces(joined, 1.0), joined)
    apart = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]], bool)  # (1, 1) unmasked: two pieces
    kept = apart.copy()
    kept[:2, :2] = False  # the smaller piece (one triangle) is dropped
    assert np.array_equal(mesh.large_pieces(apart, 1.0), kept)


def test_surface_drops_the_small_piece_and_keeps_coordinates():
    depth = np.full((30, 40), 12.0)
    mask = np.zeros((30, 40), bool)
    mask[0:20, 25:40] = True  # the face, touching the image's edges
    mask[25:28, 2:5] = True  # a small island: dropped
    mask[29, 0] = True  # a lone pixel: no triangle
    surface = mesh.surface_from_depth(depth, mask)
    assert len(surface.vertices) == 20 * 15 and len(surface.triangles) == 2 * 19 * 14
    assert surface.vertices[:, 0].min() == 25 and surface.vertices[:, 0].max() == 39
    assert surface.vertices[:, 1].min() == 0 and surface.vertices[:, 1].max() == 19
    whole = mesh.height_field(mesh.limit_outline(depth, mask), mask)
    assert np.array_equal(surface.vertices, whole.vertices[(whole.vertices[:, 0] >= 25)])


def test_empty_mask_gives_an_empty_surface():
    for mask in (np.zeros((8, 8), bool), np.eye(8, dtype=bool)):
        surface = mesh.surface_from_depth(np.where(mask, 5.0, np.inf), mask)
        assert surface.vertices.shape == (0, 3) and surface.triangles.shape == (0, 3)
        assert surface.triangles.dtype == np.int64


def test_outline_limit_matches_its_ring_by_ring_definition():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for _ in range(30):
        mask = ndimage.binary_opening(rng.random((40, 50)) < 0.7) | (rng.random((40, 50)) < 0.05)
        depth = np.where(mask, rng.uniform(0, 100, mask.shape), np.inf)
        expected, done = depth.copy(), ndimage.binary_erosion(mask, iterations=mesh.OUTLINE_WIDTH)
        while (ring := ndimage.binary_dilation(done) & mask & ~done).any():
            inner = ndimage.grey_erosion(np.where(done, expected, np.inf), size=(3, 3), mode="constant", cval=np.inf)
            expected[ring] = np.minimum(expected[ring], inner[ring] + mesh.OUTLINE_SLOPE)
            done |= ring
        assert np.array_equal(mesh.limit_outline(depth, mask), expected)
