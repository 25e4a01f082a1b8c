"""The `facevox` command, run as users run it: exit codes, one-line messages, files written whole."""

import json
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from PIL import Image

from conftest import bomb_png


def facevox(*args, cwd=None):
    command = [sys.executable, "-c", "from facevox.cli import main; main()", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut_jpeg, grace_hopper):
    folder = tmp_path_factory.mktemp("photos")
    (folder / "astronaut.jpg").write_bytes(astronaut_jpeg)
    Image.fromarray(grace_hopper).save(folder / "grace hopper.png")
    return folder


@pytest.fixture(scope="module")
def bad_photos(tmp_path_factory, astronaut_jpeg):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(astronaut_jpeg[:4000])
    (folder / "text.jpg").write_text("not a photo\n")
    (folder / "bomb.png").write_bytes(bomb_png())
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(folder / "wall.png")
    (folder / "good.jpg").write_bytes(astronaut_jpeg)
    return folder


@pytest.mark.needs_detector
def test_one_photo_writes_a_glb_beside_it(tmp_path, astronaut_jpeg):
    photo = tmp_path / "me.jpg"
    photo.write_bytes(astronaut_jpeg)
    result = facevox(photo)
    assert result.returncode == 0, result.stderr
    assert trimesh.load(tmp_path / "me.glb", force="mesh").faces.shape[0] > 5000
    assert (tmp_path / "me.json").exists()


@pytest.mark.needs_detector
def test_batch_with_all_formats_and_previews(tmp_path, photos):
    out = tmp_path / "out"
    result = facevox(photos, "-o", out, "--format", "glb,ply,obj,stl", "--preview")
    assert result.returncode == 0, result.stderr
    assert "done 2, no face 0, failed 0" in result.stdout
    for stem in ("astronaut", "grace hopper"):
        for fmt in ("glb", "ply", "obj", "stl"):
            body = trimesh.load(out / f"{stem}.{fmt}", force="mesh")
            assert len(body.faces) > 5000
            if fmt == "stl":
                assert body.is_watertight
        preview = np.asarray(Image.open(out / f"{stem}.preview.png"))
        assert preview.std() > 10  # a picture, not a blank canvas


@pytest.mark.needs_detector
def test_bad_inputs_get_one_line_each_and_the_batch_goes_on(tmp_path, bad_photos):
    out = tmp_path / "out"
    result = facevox(bad_photos, tmp_path / "missing.jpg", "-o", out)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    expected = {
        "empty.jpg": "empty file",
        "truncated.jpg": "damaged or truncated",
        "text.jpg": "not an image",
        "bomb.png": "too many pixels",
        "wall.png": "no face",
        "missing.jpg": "no such file",
    }
    for name, reason in expected.items():
        assert sum(name in line and reason in line for line in lines) == 1, (name, lines)
    assert "done 1, no face 1, failed 5" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["good.glb", "good.json"]  # nothing half-written


def test_batch_rejects_an_unknown_number_format(tmp_path, photos):
    result = facevox("batch", photos, "-o", tmp_path / "out", "--device", "cpu", "--precision", "fp8")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "unknown number format 'fp8'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_folder_without_images_and_bad_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    result = facevox(tmp_path)
    assert result.returncode == 1 and "no images found" in result.stderr and "Traceback" not in result.stderr
    result = facevox(tmp_path / "x.jpg", "--format", "fbx")
    assert result.returncode != 0 and "unknown format" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.needs_detector
def test_no_mirror_reaches_the_network(tmp_path, astronaut_jpeg):
    photo = tmp_path / "me.jpg"
    photo.write_bytes(astronaut_jpeg)
    meshes = {}
    for flag in ("--mirror", "--no-mirror"):
        result = facevox(photo, flag, "-o", tmp_path / flag)
        assert result.returncode == 0, result.stderr
        meshes[flag] = trimesh.load(tmp_path / flag / "me.glb", force="mesh")
    assert not np.array_equal(meshes["--mirror"].vertices[:100], meshes["--no-mirror"].vertices[:100])


def test_mesh_choice_names_the_files(tmp_path, astronaut_jpeg):
    photo = tmp_path / "me.jpg"
    photo.write_bytes(astronaut_jpeg)
    result = facevox(photo, "-o", tmp_path / "both", "--mesh", "both", "--format", "glb,obj,stl,json", "--preview")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == [
        "me.glb", "me.json", "me.mtl", "me.obj", "me.png", "me.preview.png", "me.stl",
        "me.surface.glb", "me.surface.obj", "me.surface.preview.png", "me.surface.stl"]
    head = trimesh.load(tmp_path / "both" / "me.glb", force="mesh")
    surface = trimesh.load(tmp_path / "both" / "me.surface.glb", force="mesh")
    assert np.ptp(head.vertices[:, 2]) > 1.5 * np.ptp(surface.vertices[:, 2])  # the head goes round the back
    for name in ("me.stl", "me.surface.stl"):
        assert trimesh.load(tmp_path / "both" / name).is_watertight
    obj = trimesh.load(tmp_path / "both" / "me.obj", force="mesh")
    assert isinstance(obj.visual, trimesh.visual.TextureVisuals)  # its material and texture found beside it
    result = facevox(photo, "-o", tmp_path / "surface", "--mesh", "surface")
    assert sorted(p.name for p in (tmp_path / "surface").iterdir()) == ["me.glb", "me.json"]
    assert "head" not in json.loads((tmp_path / "surface" / "me.json").read_text())
    result = facevox(photo, "--mesh", "skull")
    assert result.returncode == 2 and "unknown mesh 'skull'" in result.stderr and "Traceback" not in result.stderr
