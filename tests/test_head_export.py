"""The head's files (facevox.export.head), on a small stand-in facevox.head.Head: a sphere with eye, mouth and neck
holes, eyeballs inside, a UV seam and two blendshapes. GLBs pass the Khronos glTF validator."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import trimesh

from facevox.export import export, export_files
from facevox.export.head import arkit_names, closed_head, head_frame, texture_colours
from facevox.face import Face, Mesh
from facevox.head import Head
from gltf_validator import assert_valid

EYES = np.array([[-0.35, 0.3, 0.88], [0.35, 0.3, 0.88]])
MOUTH = np.array([0.0, -0.45, 0.85])


def to_photo(points: np.ndarray) -> np.ndarray:
    """Model units (y up, z towards the camera) → photo pixels (y down, z away), 80 pixels a unit."""
    return points * [80.0, -80.0, -80.0] + [200.0, 200.0, 300.0]


def stand_in_face() -> Face:
    skin = trimesh.creation.icosphere(subdivisions=3)
    centres = skin.triangles_center
    holes = (np.linalg.norm(centres[:, None] - np.vstack([EYES, MOUTH]), axis=2).min(1) < 0.2) | (centres[:, 1] < -0.85)
    faces = skin.faces[~holes]
    vertices = skin.vertices
    seam = faces[skin.triangles_center[~holes][:, 0] > 0]  # the x > 0 half gets its own copies of its vertices
    copies, local = np.unique(seam, return_inverse=True)
    faces = np.vstack([faces[skin.triangles_center[~holes][:, 0] <= 0], len(vertices) + local.reshape(-1, 3)])
    vertices = np.vstack([vertices, vertices[copies]])
    parts, regions = [vertices], {}
    for name, centre in [("eyes", EYES[0] * 0.8), ("eyes", EYES[1] * 0.8), ("mouth_interior", MOUTH * 0.7)]:
        ball = trimesh.creation.icosphere(subdivisions=1, radius=0.12)
        start = sum(len(p) for p in parts)
        faces = np.vstack([faces, ball.faces + start])
        parts.append(ball.vertices + centre)
        regions[name] = np.r_[regions.get(name, np.zeros(0, int)), np.arange(start, start + len(ball.vertices))]
    model = np.vstack(parts)
    uvs = np.column_stack([0.5 + np.arctan2(model[:, 0], model[:, 2]) / (2 * np.pi), 0.5 + np.clip(model[:, 1], -1, 1) / 2])
    jaw = np.where(model[:, 1] < -0.3, 1.0, 0.0)[:, None] * [0.0, -0.2, 0.0]  # the lower part moves down
    brow = np.where(np.linalg.norm(model - [0.0, 0.6, 0.8], axis=1) < 0.25, 1.0, 0.0)[:, None] * [0.0, 0.1, 0.0]
    blendshapes = np.stack([to_photo(model + jaw) - to_photo(model), to_photo(model + brow) - to_photo(model)]).astype(np.float32)
    expression = np.array([0.4, 0.0], np.float32)
    fitted = to_photo(model) + np.tensordot(expression, blendshapes, axes=1)
    rows, columns = np.mgrid[0:64, 0:64]
    texture = np.stack([columns * 4, rows * 4, np.full_like(rows, 128)], axis=-1).astype(np.uint8)
    head = Head(fitted.astype(np.float32), faces.astype(np.int32), uvs.astype(np.float32), texture,
                       ["jawOpen", "browInnerUp"], blendshapes, np.array([0.5, -1.0, 0.25]), expression, regions)
    landmarks = to_photo(np.tile([0.0, 0.0, 0.9], (68, 1)))
    landmarks[36], landmarks[45] = to_photo(np.array([[-0.465, 0.3, 0.8], [0.465, 0.3, 0.8]]))  # 74.4 px: 1.25 mm a pixel
    front = to_photo(skin.vertices[skin.vertices[:, 2] > 0.3])
    return Face(box=np.array([120.0, 120.0, 280.0, 280.0]), score=0.9, landmarks_2d=landmarks[:, :2], landmarks_3d=landmarks,
                yaw=0.0, pitch=0.0, roll=0.0, mesh=Mesh(front, np.zeros((0, 3), np.int64)), head=head)


@pytest.fixture(scope="module")
def face() -> Face:
    return stand_in_face()


def read_glb(data: bytes) -> tuple[dict, bytes]:
    assert data[:4] == b"glTF" and struct.unpack("<II", data[4:12]) == (2, len(data))
    length = struct.unpack("<I", data[12:16])[0]
    gltf = json.loads(data[20 : 20 + length])
    return gltf, data[20 + length + 8 :]


def read_accessor(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    """An accessor's values, sparse ones included (float32 or uint32 only: what facevox writes)."""
    accessor = gltf["accessors"][index]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[accessor["type"]]
    dtype = {5126: np.float32, 5125: np.uint32}[accessor["componentType"]]

    def view(number: int, count: int, kind=dtype, columns=width) -> np.ndarray:
        start = gltf["bufferViews"][number]["byteOffset"]
        return np.frombuffer(binary, kind, count * columns, start).reshape(count, columns)

    values = view(accessor["bufferView"], accessor["count"]).copy() if "bufferView" in accessor else np.zeros((accessor["count"], width), dtype)
    if "sparse" in accessor:
        sparse = accessor["sparse"]
        where = view(sparse["indices"]["bufferView"], sparse["count"], np.uint32, 1)[:, 0]
        values[where] = view(sparse["values"]["bufferView"], sparse["count"])
    return values


def test_glb_has_the_texture_and_named_morph_targets_that_rebuild_the_fitted_head(face, tmp_path):
    data = export(face, "glb")
    assert_valid(data, tmp_path)
    gltf, binary = read_glb(data)
    mesh = gltf["meshes"][0]
    primitive = mesh["primitives"][0]
    assert mesh["extras"]["targetNames"] == ["jawOpen", "browInnerUp"]
    assert mesh["weights"] == pytest.approx([0.4, 0.0])  # the fitted expression
    assert set(primitive["attributes"]) == {"POSITION", "NORMAL", "TEXCOORD_0"}
    base = read_accessor(gltf, binary, primitive["attributes"]["POSITION"])
    targets = [read_accessor(gltf, binary, t["POSITION"]) for t in primitive["targets"]]
    assert gltf["accessors"][primitive["targets"][1]["POSITION"]]["sparse"]["count"] < len(base) / 10  # only the brow moves
    fitted, offsets, _ = head_frame(face)
    posed = base + sum(w * t for w, t in zip(mesh["weights"], targets))
    assert np.abs(posed - fitted).max() < 1e-3  # base + weights × targets = the head as fitted (mm)
    assert np.abs(targets[0] - offsets[0]).max() < 1e-3 and targets[0][:, 1].min() == pytest.approx(-20)  # jaw: 0.2 units = 20 mm down (y up)
    assert np.allclose(np.linalg.norm(read_accessor(gltf, binary, primitive["attributes"]["NORMAL"]), axis=1), 1, atol=1e-5)
    uv = read_accessor(gltf, binary, primitive["attributes"]["TEXCOORD_0"])
    assert np.allclose(uv, np.column_stack([face.head.uvs[:, 0], 1 - face.head.uvs[:, 1]]))  # glTF's v runs down
    image = gltf["images"][0]
    view = gltf["bufferViews"][image["bufferView"]]
    from PIL import Image

    png = Image.open(io.BytesIO(binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]))
    assert image["mimeType"] == "image/png" and np.array_equal(np.asarray(png), face.head.texture)
    body = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh", process=False)
    assert len(body.faces) == len(face.head.faces) and np.allclose(body.vertices, base, atol=1e-4)


def test_head_is_in_the_surfaces_file_frame(face):
    from facevox.export.files import viewer_frame

    vertices, surface = head_frame(face)[0], viewer_frame(face)[0]
    assert vertices[:, 1].max() == pytest.approx(100, abs=0.5)  # y up: the crown on top, 1 unit = 100 mm above the centre
    assert vertices[:, 2].max() == pytest.approx(surface[:, 2].max(), abs=0.5)  # z towards the viewer: the fronts meet
    assert np.ptp(vertices[:, 0]) == pytest.approx(200, rel=0.02)  # 2 units × 80 px × 1.25 mm a pixel


def test_obj_with_its_material_and_texture(face, tmp_path):
    files = export_files(face, "obj", "me")
    assert sorted(files) == ["me.mtl", "me.obj", "me.png"]
    assert b"mtllib me.mtl" in files["me.obj"] and b"map_Kd me.png" in files["me.mtl"]
    assert b"mtllib" not in export(face, "obj")  # a lone OBJ (no name) refers to no other file
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    body = trimesh.load(tmp_path / "me.obj", force="mesh", process=False)
    assert isinstance(body.visual, trimesh.visual.TextureVisuals)
    assert np.asarray(body.visual.material.image).shape[:2] == face.head.texture.shape[:2]
    assert len(body.faces) == len(face.head.faces)


def test_ply_colours_come_from_the_texture(face):
    body = trimesh.load(io.BytesIO(export(face, "ply")), file_type="ply", process=False)
    colours = texture_colours(face.head)
    assert np.array_equal(body.visual.vertex_colors[:, :3], colours)
    uv = face.head.uvs[0]
    assert abs(int(colours[0, 0]) - uv[0] * 63 * 4) <= 2  # red grows along u (the stand-in's texture)
    assert np.ptp(colours[:, 0]) > 100


def test_stl_is_watertight_with_eyes_mouth_and_neck_closed(face):
    body = trimesh.load(io.BytesIO(export(face, "stl")), file_type="stl")
    assert body.is_watertight and body.is_winding_consistent and body.volume > 0
    assert body.body_count == 1  # the eyeballs and the mouth's interior are gone
    small = trimesh.load(io.BytesIO(export(face, "stl", size_mm=50)), file_type="stl")
    assert np.ptp(small.vertices, axis=0).max() == pytest.approx(50, rel=1e-4)


def test_closed_head_fills_every_hole(face):
    vertices, faces = closed_head(face.head.vertices.astype(np.float64), face.head.faces.astype(np.int64), face.head.regions)
    body = trimesh.Trimesh(vertices, faces, process=False)
    assert body.is_watertight and body.is_winding_consistent
    added = ~(vertices[:, None] == face.head.vertices[None]).all(2).any(1)
    assert added.sum() == 4  # one fan centre for each hole: two eyes, the mouth, the neck


def test_json_has_identity_and_expression_by_name(face):
    record = json.loads(export(face, "json"))
    assert record["head"]["expression"] == {"jawOpen": 0.4, "browInnerUp": 0.0}
    assert record["head"]["identity"] == [0.5, -1.0, 0.25]
    assert record["head"]["vertices"] == len(face.head.vertices)


def test_mesh_choice(face):
    from dataclasses import replace

    assert export(face, "glb", mesh="head") == export(face, "glb")  # a face with a head: the head by default
    bare = replace(face, head=None)
    with pytest.raises(ValueError, match="no head"):
        export(bare, "obj", mesh="head")
    with pytest.raises(ValueError, match="unknown mesh"):
        export(face, "glb", mesh="skull")
    assert "head" not in json.loads(export(bare, "json"))


def test_arkit_names():
    assert arkit_names(["eyeBlink_L", "mouthSmile_R", "jawOpen", "browInnerUp_L"]) == ["eyeBlinkLeft", "mouthSmileRight", "jawOpen", "browInnerUpLeft"]


@pytest.fixture(scope="module")
def astronaut_face(reconstructor, astronaut) -> Face:
    return reconstructor(astronaut)[0]


def test_real_heads_files(astronaut_face, reconstructor, grace_hopper, tmp_path):
    face = astronaut_face
    assert face.head is not None  # the default Settings fit a head
    data = export(face, "glb")
    assert_valid(data, tmp_path)
    gltf, _ = read_glb(data)
    names = gltf["meshes"][0]["extras"]["targetNames"]
    assert len(names) == 53 and {"jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "browDownRight"} <= set(names)
    assert len(gltf["meshes"][0]["primitives"][0]["targets"]) == 53
    assert len(data) < 12_000_000  # sparse morph targets keep the file small enough for the web page
    stl = trimesh.load(io.BytesIO(export(face, "stl")), file_type="stl")
    assert stl.is_watertight and stl.is_winding_consistent and stl.body_count == 1 and stl.volume > 0
    extent = np.ptp(stl.vertices, axis=0)
    assert 120 < extent[0] < 300 and extent[1] > extent[0] * 0.8  # a head-sized solid, in millimetres
    other = reconstructor(grace_hopper)[0]
    assert len(other.head.vertices) == len(face.head.vertices) and np.array_equal(other.head.faces, face.head.faces)
    body = trimesh.load(io.BytesIO(export(other, "glb")), file_type="glb", force="mesh", process=False)
    assert len(body.vertices) == len(face.head.vertices)  # the same topology from every photo
    record = json.loads(export(face, "json"))
    assert len(record["head"]["identity"]) == len(face.head.identity) and set(record["head"]["expression"]) == set(names)


def test_full_size_repeats_a_reduced_decoding_around_the_face():
    from facevox.api import full_size
    from facevox.image import Photo

    pixels = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert full_size(Photo(pixels), np.array([10.0, 10.0, 20.0, 20.0])) is pixels
    full = full_size(Photo(pixels, reduction=4), np.array([80.0, 60.0, 120.0, 100.0]))  # photo pixels
    assert full.shape == (160, 200, 3)
    ys, xs = np.mgrid[20:140, 40:160]  # the box and a box's size round it
    assert np.array_equal(full[ys, xs], pixels[ys // 4, xs // 4])  # photo pixel (x, y) lies in decoded pixel (x // 4, y // 4)
    assert not full[:, :36].any() and not full[:16].any()  # far from the face: left zero
