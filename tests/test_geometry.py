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


def test_surface_mesh_faces_the_camera_and_lies_on_the_surface():
    volume, _ = dome_volume()
    surface = mesh.surface_mesh(volume, smooth_iterations=0)
    assert len(surface.triangles) > 1000
    normals = mesh.face_normals(surface.vertices, surface.triangles)
    assert (normals[:, 2] < mesh.FACING).all()  # every triangle faces the camera (−z)
    assert normals[:, 2].mean() < -0.45  # a half ball: about −0.5 over its triangles
    # Vertices sit on the dome's front surface within one voxel (no side walls kept).
    xs, ys, ks = surface.vertices.T
    r = np.hypot(xs - 96, ys - 96)
    inside = r < 50
    expected = 100 - np.sqrt(60**2 - r[inside] ** 2)
    assert inside.mean() > 0.5
    assert np.abs(ks[inside] - expected).max() < 1.0
    assert ks.max() < 102


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
    empty = mesh.surface_mesh(np.zeros((20, 16, 16), np.float32))
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


def test_a_surface_cut_by_a_steep_step_keeps_both_large_pieces():
    """Near profile a face can fall apart into large pieces at steep parts: none may be dropped."""
    ys, xs = np.mgrid[0:96, 0:96]
    front = np.where((xs - 48) ** 2 / 40**2 + (ys - 48) ** 2 / 40**2 < 1, np.where(xs < 48, 40.0, 90.0), np.inf)
    front[40:44, 20:24] = 20.0  # a small island in front: dropped
    k = np.arange(120)[:, None, None]
    volume = np.clip(k - front[None] + 0.5, 0, 1).astype(np.float32)
    surface = mesh.surface_mesh(volume, smooth_iterations=0)
    xs, ks = surface.vertices[:, 0], surface.vertices[:, 2]
    assert (np.abs(ks[xs < 46] - 40) <= 1).mean() > 0.95 and (xs < 46).sum() > 1000
    assert (np.abs(ks[xs > 50] - 90) <= 1).mean() > 0.95 and (xs > 50).sum() > 1000
    assert not ((ks < 30).any())
