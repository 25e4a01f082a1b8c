"""The whole pipeline on the package photos with the shipped model, and the file writers."""

import io
import os

import numpy as np
import pytest
import trimesh

import facevox
from facevox.export import FORMATS, export, write_atomic


@pytest.fixture(scope="module")
def astronaut_face(reconstructor, astronaut):
    faces = reconstructor(astronaut)
    assert len(faces) == 1
    return faces[0]


def test_astronaut_face_overlays_the_photo(astronaut_face):
    face = astronaut_face
    x0, y0, x1, y1 = face.box
    assert 150 < (x0 + x1) / 2 < 300 and 60 < (y0 + y1) / 2 < 200  # her face, not the flag or the helmet
    assert face.landmarks_2d.shape == (68, 2) and face.landmarks_3d.shape == (68, 3)
    nose, chin = face.landmarks_2d[30], face.landmarks_2d[8]
    assert x0 - 5 < nose[0] < x1 + 5 and nose[1] < chin[1]  # nose inside the box and above the chin
    assert abs(face.yaw) < 20 and abs(face.roll) < 15
    vertices = face.mesh.vertices
    assert len(face.mesh.triangles) > 5000
    centre = vertices[:, :2].mean(0)
    assert x0 < centre[0] < x1 and y0 - 20 < centre[1] < y1 + 20
    # The nose tip is nearer the camera than the cheeks (depth grows away from the camera).
    assert face.landmarks_3d[30, 2] < face.landmarks_3d[[1, 15], 2].mean()
    skin = face.mesh.colours.mean(0)
    assert skin[0] > skin[2]  # colours come from the photo: skin is redder than blue


def test_turned_head_gives_a_turned_pose(reconstructor, astronaut):
    mirrored = reconstructor(astronaut[:, ::-1])[0]
    straight = reconstructor(astronaut)[0]
    assert abs(mirrored.yaw + straight.yaw) < 8
    assert abs(mirrored.roll + straight.roll) < 8


def test_grace_hopper(reconstructor, grace_hopper):
    face = reconstructor(grace_hopper)[0]
    assert len(face.mesh.triangles) > 5000
    assert face.box[0] < face.landmarks_2d[30, 0] < face.box[2]


def test_no_face_raises(reconstructor):
    with pytest.raises(facevox.NoFaceError):
        reconstructor(np.full((300, 300, 3), 128, np.uint8))


def test_every_format_loads(astronaut_face):
    for fmt in FORMATS:
        data = export(astronaut_face, fmt, model="test", mesh="surface")
        if fmt == "json":
            import json

            record = json.loads(data)
            assert len(record["landmarks_2d"]) == 68 and set(record["pose"]) == {"yaw", "pitch", "roll"}
            continue
        body = trimesh.load(io.BytesIO(data), file_type=fmt, force="mesh")
        assert len(body.faces) > 5000
        extent = np.ptp(body.vertices, axis=0)
        assert 100 < extent[1] < 260 and extent[2] > 30  # a face-sized object in millimetres
        if fmt == "stl":
            assert body.is_watertight and body.volume > 0
        else:
            # Viewer frame (y up, z towards the viewer): the surface faces +z, the forehead is up.
            assert body.face_normals[:, 2].mean() > 0.3
    with pytest.raises(ValueError, match="unknown format"):
        export(astronaut_face, "fbx")


def test_stl_size_option(astronaut_face):
    body = trimesh.load(io.BytesIO(export(astronaut_face, "stl", size_mm=50, mesh="surface")), file_type="stl")
    assert np.isclose(np.ptp(body.vertices, axis=0).max(), 50, rtol=1e-3)


def test_write_atomic_leaves_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "face.glb"
    write_atomic(target, b"whole")
    assert target.read_bytes() == b"whole"
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "other.glb", "not bytes")  # fails mid-write
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_atomic(target, b"new")  # fails at the rename
    assert sorted(os.listdir(tmp_path)) == ["face.glb"] and target.read_bytes() == b"whole"


def test_written_files_get_the_usual_permissions(tmp_path, monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("facevox.export"), "_UMASK", 0o027)  # the module, not facevox.export()
    write_atomic(tmp_path / "face.glb", b"x")
    assert (tmp_path / "face.glb").stat().st_mode & 0o777 == 0o640  # as open() gives under that umask, not mkstemp's 0o600


@pytest.mark.needs_detector
def test_group_photo_gives_every_face_largest_first():
    from bench.speed import group_photo
    from facevox.faces import default_detectors, detect_faces

    found = [d for d in detect_faces(group_photo(), default_detectors()) if not d.fallback]
    assert len(found) == 10
    areas = [(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) for d in found]
    assert areas == sorted(areas, reverse=True)


def test_a_large_photo_is_shrunk_by_a_whole_factor_to_block_means():
    from facevox import faces

    rng = np.random.default_rng(0)
    large = rng.integers(0, 256, (1537, 2600, 3), dtype=np.uint8)  # shrunk by 3; the last row and column fill no block
    small, scale = faces.shrink(large, faces.DETECT_SIDE)
    assert small.shape == (512, 866, 3) and small.dtype == np.uint8 and scale == (3.0, 3.0)
    means = large[:1536, :2598].reshape(512, 3, 866, 3, 3).mean(axis=(1, 3))
    assert np.abs(small - means).max() < 1  # the mean, rounded
    photo = large[:1280, :1000]
    assert faces.shrink(photo, faces.DETECT_SIDE)[0] is photo


@pytest.mark.needs_detector
def test_a_large_photo_is_detected_shrunk_with_boxes_in_its_own_pixels(astronaut, monkeypatch):
    from PIL import Image

    from facevox import faces

    large = np.asarray(Image.fromarray(astronaut).resize((3 * 512, 3 * 512), Image.BICUBIC))  # 1536 px: shrunk by 2
    small, scale = faces.shrink(large, faces.DETECT_SIDE)
    assert small.shape[:2] == (768, 768) and scale == (2.0, 2.0)
    detectors = faces.default_detectors()
    box = faces.detect_faces(large, detectors)[0].box
    monkeypatch.setattr(faces, "DETECT_SIDE", 10**6)  # the detectors on the whole-resolution photo
    expected = faces.detect_faces(large, detectors)[0].box
    assert np.abs(box - expected).max() < 0.02 * (expected[2] - expected[0])


def test_crop_is_bilinear_and_black_outside_the_photo():
    from facevox.crop import crop_image

    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    shifted = np.array([[1.0, 0.0, -10.0], [0.0, 1.0, -5.0]])  # crop pixel (x, y) = photo pixel (x + 10, y + 5)
    assert np.array_equal(crop_image(photo, shifted, 20), photo[5:25, 10:30])
    halfway = np.array([[1.0, 0.0, -10.5], [0.0, 1.0, -5.0]])
    want = (photo[5:25, 10:30].astype(float) + photo[5:25, 11:31]) / 2
    assert np.abs(crop_image(photo, halfway, 20) - want).max() <= 0.5 + 1e-9
    outside = crop_image(photo, np.array([[1.0, 0.0, 30.0], [0.0, 1.0, 30.0]]), 20)  # photo (0, 0) at crop (30, 30)
    assert not outside.any()
    edge = crop_image(photo, np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]), 20)  # column 0 straddles the left edge
    assert np.abs(edge[:, 0] - photo[:20, 0] / 2).max() <= 0.5 + 1e-9


def test_decoding_rules_keep_detector_input_and_crops_large_enough():
    from facevox import crop, faces

    assert [faces.decode_reduction((w, 100)) for w in (1280, 1281, 2559, 2560, 4032, 20000)] == [1, 2, 2, 4, 4, 8]
    assert [crop.reduction((0, 0, w, w)) for w in (100, 239, 240, 480, 960, 5000)] == [1, 1, 2, 4, 8, 8]
    a, b = np.array([[2.0, 0, 3], [0, 2, 5]]), np.array([[0.5, 0, 1], [0, 0.5, -1]])
    points = np.array([[10.0, 20], [3, 4]])
    assert np.allclose(crop.apply(crop.chain(a, b), points), crop.apply(a, crop.apply(b, points)))


def test_a_large_jpeg_gives_the_face_of_its_full_size_pixels(reconstructor, astronaut):
    """A 12-megapixel JPEG is decoded at a quarter of its size; the face comes out in the photo's own
    pixels, as from the full-size pixels (given as an array)."""
    from PIL import Image

    canvas = np.full((3000, 4000, 3), 128, np.uint8)
    canvas[:, 500:3500] = np.asarray(Image.fromarray(astronaut).resize((3000, 3000), Image.BICUBIC))
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="JPEG", quality=92)
    (face,), (want,) = reconstructor(buffer.getvalue()), reconstructor(canvas)
    eyes = np.linalg.norm(want.landmarks_2d[36:42].mean(0) - want.landmarks_2d[42:48].mean(0))
    assert eyes > 200
    assert np.linalg.norm(face.landmarks_2d - want.landmarks_2d, axis=1).mean() < 0.03 * eyes
    assert np.abs(face.box - want.box).max() < 0.05 * (want.box[2] - want.box[0])
    assert np.abs(face.mesh.colours.mean(0) - want.mesh.colours.mean(0)).max() < 3


def test_haar_fallback_finds_the_astronaut(astronaut):
    pytest.importorskip("cv2", reason="the Haar detector needs opencv-python-headless (pip install facevox[haar])")
    from facevox.faces import HaarDetector, detect_faces

    try:
        haar = HaarDetector()
    except ImportError as error:  # OpenCV 5 keeps no cascades in its main module
        pytest.skip(str(error))
    found = detect_faces(astronaut, [haar])
    assert len(found) >= 1
    x0, y0, x1, y1 = found[0].box
    assert 150 < (x0 + x1) / 2 < 300 and 60 < (y0 + y1) / 2 < 200


def test_an_opencv_without_haar_cascades_gives_no_haar_detector(monkeypatch):
    cv2 = pytest.importorskip("cv2", reason="the Haar detector needs opencv-python-headless (pip install facevox[haar])")
    from facevox import faces

    monkeypatch.delattr(cv2, "CascadeClassifier", raising=False)  # as in OpenCV 5
    with pytest.raises(ImportError):
        faces.HaarDetector()


def test_default_detectors_are_the_installed_ones_in_order_or_a_clear_error(monkeypatch):
    from facevox import faces
    from facevox.errors import FacevoxError

    def installed(name):
        return type(name, (), {"name": name})

    def missing():
        raise ImportError("not installed")

    monkeypatch.setattr(faces, "DETECTORS", {"own": missing, "first": installed("first"), "second": installed("second")})
    monkeypatch.setattr(faces, "DEFAULT_DETECTORS", ("own", "second", "first"))
    assert [d.name for d in faces.default_detectors()] == ["second", "first"]
    assert [d.name for d in faces.detectors_by_name("first+second")] == ["first", "second"]
    with pytest.raises(ImportError):
        faces.detectors_by_name("own")
    with pytest.raises(ValueError, match="unknown face detector 'third'"):
        faces.detectors_by_name("first+third")
    monkeypatch.setattr(faces, "DEFAULT_DETECTORS", ("own",))
    with pytest.raises(FacevoxError, match="no face detector"):
        faces.default_detectors()


def small_face(colours: bool = True, empty: bool = False) -> facevox.Face:
    """A face whose mesh is a 3 × 4 grid of vertices (12 triangles) in the photo frame."""
    from facevox.face import Face, Mesh

    rng = np.random.default_rng(5)
    depth = np.full((3, 4), 20.0)
    surface = Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    if not empty:
        from facevox import mesh

        grid = mesh.height_field(depth + rng.uniform(0, 3, depth.shape), np.ones((3, 4), bool))
        surface = Mesh(grid.vertices * [10.0, 10.0, 1.0] + [100.0, 50.0, 0.0], grid.triangles,
                       rng.integers(0, 256, (12, 3), dtype=np.uint8) if colours else None)
    landmarks = rng.uniform(40, 160, (68, 3))
    return Face(box=np.array([90.0, 40.0, 140.0, 80.0]), score=0.9, landmarks_2d=landmarks[:, :2], landmarks_3d=landmarks,
                yaw=0.0, pitch=0.0, roll=0.0, mesh=surface)


@pytest.mark.parametrize("colours", [True, False])
def test_glb_reads_back_as_the_viewer_frame_mesh(colours):
    import json
    import struct

    from facevox.export.files import viewer_frame

    face = small_face(colours)
    data = export(face, "glb")
    assert data[:4] == b"glTF" and struct.unpack("<II", data[4:12]) == (2, len(data)) and len(data) % 4 == 0
    gltf = json.loads(data[20 : 20 + struct.unpack("<I", data[12:16])[0]])
    position = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    surface = face.mesh.vertices
    scale = 93.0 / np.linalg.norm(face.landmarks_3d[36] - face.landmarks_3d[45])  # eye corners 93 mm apart
    vertices = ((surface - (surface.min(0) + surface.max(0)) / 2) * scale * [1.0, -1.0, -1.0]).astype(np.float32)
    assert np.array_equal(viewer_frame(face)[0].astype(np.float32), vertices)  # y up, z towards the viewer
    assert position["min"] == vertices.min(0).tolist() and position["max"] == vertices.max(0).tolist()  # as glTF requires
    body = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh", process=False)
    assert np.array_equal(body.vertices, vertices) and np.array_equal(body.faces, face.mesh.triangles)
    if colours:
        assert np.array_equal(body.visual.vertex_colors[:, :3], face.mesh.colours) and (body.visual.vertex_colors[:, 3] == 255).all()
    else:
        assert "COLOR_0" not in gltf["meshes"][0]["primitives"][0]["attributes"]


def test_glb_of_an_empty_mesh_is_an_empty_scene():
    body = trimesh.load(io.BytesIO(export(small_face(empty=True), "glb")), file_type="glb", force="mesh")
    assert len(body.vertices) == 0 and len(body.faces) == 0


@pytest.mark.parametrize("which", ["astronaut", "grid", "grid without colours", "empty"])
def test_surface_glbs_pass_the_gltf_validator(which, request, tmp_path):
    from gltf_validator import assert_valid

    face = {"astronaut": lambda: request.getfixturevalue("astronaut_face"), "grid": small_face,
            "grid without colours": lambda: small_face(colours=False), "empty": lambda: small_face(empty=True)}[which]()
    assert_valid(export(face, "glb", mesh="surface"), tmp_path)


def test_a_detection_the_network_does_not_call_a_face_is_dropped():
    """A box on a face-free picture (scikit-image's cat) gives no face; with the check off, it gives one."""
    import skimage.data

    from facevox.faces import Detection

    class OnTheCat:
        name = "stand-in"

        def detect(self, image):
            return [Detection(np.array([150.0, 60.0, 330.0, 240.0]), 0.9, self.name)]

    cat = skimage.data.chelsea()
    with pytest.raises(facevox.NoFaceError):
        facevox.Reconstructor(detectors=[OnTheCat()], settings=facevox.Settings(mesh="surface"))(cat)
    faces = facevox.Reconstructor(detectors=[OnTheCat()], settings=facevox.Settings(mesh="surface", min_evidence=0.0))(cat)
    assert len(faces) == 1
