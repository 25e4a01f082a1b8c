"""The web API (facevox.web): happy path, every bad input, the bounded queue, result ids and expiry."""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
import trimesh
from fastapi.testclient import TestClient

from facevox.errors import NoFaceError
from facevox.web import create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def post_photo(client, data: bytes, name: str = "photo.jpg", media_type: str = "image/jpeg"):
    return client.post("/api/reconstruct", files={"photo": (name, data, media_type)})


def assert_error(response, status: int, code: str, words: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and body["error"] == code
    assert words.lower() in body["detail"].lower(), body["detail"]


@pytest.fixture(scope="module")
def client(reconstructor):
    with TestClient(create_app(reconstructor)) as client:
        yield client


@pytest.fixture(scope="module")
def astronaut_result(client, astronaut_png):
    response = post_photo(client, astronaut_png, "astronaut.png", "image/png")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def astronaut_faces(reconstructor, astronaut):
    return reconstructor.reconstruct(astronaut)


class FakeReconstructor:
    """Returns fixed faces; optionally waits for `release` first, counting calls, to fill the queue at will."""

    def __init__(self, faces, release: threading.Event | None = None):
        self.faces, self.release = faces, release
        self.started = 0
        self.lock = threading.Lock()

    def reconstruct(self, image, all_faces=True):
        with self.lock:
            self.started += 1
        if self.release is not None:
            assert self.release.wait(30), "the test never released the fake reconstructor"
        return list(self.faces)


class Broken:
    def reconstruct(self, image, all_faces=True):
        raise RuntimeError("a bug")


class NoFaces:
    def reconstruct(self, image, all_faces=True):
        raise NoFaceError("no face found in the photo")


# ------------------------------------------------------------------ happy path

def test_astronaut_png_gives_one_face_with_all_files(client, astronaut_result):
    answer = astronaut_result
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", answer["id"])
    assert answer["photo"]["width"] == 512 and answer["photo"]["height"] == 512
    assert len(answer["faces"]) == 1
    face = answer["faces"][0]
    x0, y0, x1, y1 = face["box"]
    assert 150 < x0 < x1 < 300 and 60 < y0 < y1 < 200  # the astronaut's face, upper middle of the photo
    assert np.asarray(face["landmarks_2d"]).shape == (68, 2)
    assert set(face["pose"]) == {"yaw", "pitch", "roll"} and abs(face["pose"]["yaw"]) < 25
    assert set(face["files"]) == {"glb", "obj", "stl", "ply", "json"}
    assert np.allclose(np.asarray(face["rotation"]) @ np.asarray(face["rotation"]).T, np.eye(3), atol=1e-3)

    meshes = {}
    for fmt, url in face["files"].items():
        assert url.startswith(f"/api/results/{answer['id']}/")
        response = client.get(url, params={"download": 1})
        assert response.status_code == 200
        assert response.headers["content-disposition"] == f'attachment; filename="astronaut_face1.{fmt}"'
        assert len(response.content) == face["bytes"][fmt]
        if fmt == "json":
            assert np.asarray(json.loads(response.content)["landmarks_2d"]).shape == (68, 2)
            continue
        mesh = trimesh.load(io.BytesIO(response.content), file_type=fmt, force="mesh")
        assert len(mesh.faces) > 1000, fmt
        meshes[fmt] = mesh
    assert meshes["stl"].is_watertight
    extent = meshes["glb"].extents
    assert 80 < extent[1] < 400 and extent[1] > extent[2]  # millimetres, y up: taller than deep
    assert isinstance(meshes["glb"].visual, trimesh.visual.TextureVisuals)  # the head: textured
    assert face["meshes"]["head"]["files"] == face["files"] and face["meshes"]["head"]["expression"]["jawOpen"] >= 0
    surface = face["meshes"]["surface"]
    assert set(surface["files"]) == {"glb", "obj", "stl", "ply", "json"} and surface["files"]["glb"].endswith("/face1.surface.glb")
    glb = trimesh.load(io.BytesIO(client.get(surface["files"]["glb"]).content), file_type="glb", force="mesh")
    assert glb.visual.vertex_colors.shape[0] == len(glb.vertices) == surface["vertices"]  # the surface: vertex colours
    assert trimesh.load(io.BytesIO(client.get(surface["files"]["stl"]).content), file_type="stl").is_watertight
    photo = client.get(answer["photo"]["url"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    again = client.get(f"/api/results/{answer['id']}")
    assert again.status_code == 200 and again.json()["faces"] == answer["faces"]


def test_jpeg_upload_with_a_misleading_name_still_works(client, astronaut_jpeg):
    response = post_photo(client, astronaut_jpeg, "../../etc/passwd.txt", "text/plain")  # content decides, not the name
    assert response.status_code == 200, response.text
    face = response.json()["faces"][0]
    assert client.get(face["files"]["glb"], params={"download": 1}).headers["content-disposition"] == 'attachment; filename="passwd_face1.glb"'


def test_a_large_jpeg_keeps_its_own_pixels_and_a_small_preview(client, astronaut):
    from PIL import Image

    canvas = np.full((2400, 3200, 3), 128, np.uint8)
    canvas[:, 400:2800] = np.asarray(Image.fromarray(astronaut).resize((2400, 2400), Image.BICUBIC))
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="JPEG", quality=90)
    response = post_photo(client, buffer.getvalue(), "large.jpg", "image/jpeg")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["photo"]["width"], answer["photo"]["height"]) == (3200, 2400)
    x0, y0, x1, y1 = answer["faces"][0]["box"]  # the astronaut's face box (150-300, 60-200 in her 512 px) × 4.69
    assert 400 + 150 * 4.69 < x0 < x1 < 400 + 300 * 4.69 and 60 * 4.69 < y0 < y1 < 200 * 4.69
    preview = Image.open(io.BytesIO(client.get(answer["photo"]["url"]).content))
    assert preview.size == (1280, 960)


# ------------------------------------------------------------------ bad inputs

def test_empty_upload(client):
    assert_error(post_photo(client, b""), 400, "empty", "empty")


def test_missing_photo_field(client):
    assert_error(client.post("/api/reconstruct"), 400, "no_photo", "photo")
    assert client.post("/api/reconstruct", data={"photo": "not a file"}).status_code == 400


def test_text_file_named_jpg(client):
    assert_error(post_photo(client, b"hello, I am not a photo\n" * 20, "face.jpg"), 415, "not_an_image", "not an image")


def test_truncated_jpeg(client, astronaut_jpeg):
    assert_error(post_photo(client, astronaut_jpeg[: len(astronaut_jpeg) // 2]), 400, "damaged", "damaged or truncated")


def test_photo_with_no_face(client, grey_png):
    assert_error(post_photo(client, grey_png, "grey.png", "image/png"), 422, "no_face", "no face")


def test_too_large_upload(reconstructor, astronaut_png):
    with TestClient(create_app(reconstructor, max_upload_bytes=100_000)) as small:
        assert_error(post_photo(small, astronaut_png, "a.png"), 413, "too_large", "too large")
        # a body that arrives without Content-Length is cut off while it streams in
        boundary = "facevoxboundary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode()

        def chunks():
            yield head
            for start in range(0, len(astronaut_png), 32_768):
                yield astronaut_png[start:start + 32_768]
            yield f"\r\n--{boundary}--\r\n".encode()

        response = small.post("/api/reconstruct", content=chunks(),
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert_error(response, 413, "too_large", "too large")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width×height pixels and has no pixel data: refused from its header alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_too_many_pixels(client, reconstructor, astronaut_png):
    assert_error(post_photo(client, png_header_only(8_000, 8_000), "huge.png"), 413, "too_many_pixels", "8000×8000")
    assert_error(post_photo(client, png_header_only(20_000, 20_000), "huger.png"), 413, "too_many_pixels", "too many pixels")
    with TestClient(create_app(reconstructor, max_pixels=100_000)) as small:
        assert_error(post_photo(small, astronaut_png, "a.png"), 413, "too_many_pixels", "512×512")


# ------------------------------------------------------------------ queue, concurrency

def test_full_queue_gives_503_with_retry_after(astronaut_faces, astronaut_png):
    release = threading.Event()
    fake = FakeReconstructor(astronaut_faces, release)
    app = create_app(fake, max_concurrent=1, queue_size=2)

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://facevox") as client:
            tasks = [asyncio.create_task(client.post("/api/reconstruct", files={"photo": ("a.png", astronaut_png, "image/png")}))
                     for _ in range(20)]
            deadline = time.monotonic() + 30
            while sum(t.done() for t in tasks) < 17 or fake.started < 1:  # 1 running + 2 waiting; the rest refused at once
                assert time.monotonic() < deadline, f"{sum(t.done() for t in tasks)} answered, {fake.started} started"
                await asyncio.sleep(0.02)
            assert fake.started == 1  # the pool never runs more than max_concurrent
            config = await client.get("/api/config")  # the event loop is free while reconstructions block
            assert config.status_code == 200
            release.set()
            responses = await asyncio.gather(*tasks)
            after = await client.post("/api/reconstruct", files={"photo": ("a.png", astronaut_png, "image/png")})
            return responses, after

    responses, after = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [503] * 17
    for response in responses:
        if response.status_code == 503:
            assert_error(response, 503, "busy", "busy")
            assert int(response.headers["retry-after"]) >= 1
    assert fake.started == 4 and after.status_code == 200  # nothing stuck: the next upload goes through
    assert app.state.facevox.pending == 0


# ------------------------------------------------------------------ result ids, expiry

def test_unknown_ids_and_paths_give_404(client, astronaut_result):
    known = astronaut_result["id"]
    face_url = astronaut_result["faces"][0]["files"]["glb"]
    made_up = "A" * 24
    for url in [
        f"/api/results/{made_up}", f"/api/results/{made_up}/face1.glb",
        f"/api/results/{known}/face2.glb", f"/api/results/{known}/face1.exe",
        f"/api/results/{known}/..%2F..%2Fapp.py", f"/api/results/{known}/%2Fetc%2Fpasswd",
        f"/api/results/..%2F..%2F..%2Fetc/passwd", f"/api/results/face1.glb/face1.glb",
        f"/api/results/{face_url}", "/api/results/" + face_url.split("/")[-1] + "/face1.glb",
        "/static/..%2Fapp.py", "/static/%2E%2E/app.py",
    ]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"] == "not_found", url


def test_results_expire(astronaut_faces, astronaut_png):
    app = create_app(FakeReconstructor(astronaut_faces), ttl_s=0.5)
    with TestClient(app) as client:
        answer = post_photo(client, astronaut_png, "a.png").json()
        url = answer["faces"][0]["files"]["stl"]
        assert client.get(url).status_code == 200
        time.sleep(0.7)
        assert_error(client.get(url), 410, "expired", "expired")
        assert_error(client.get(f"/api/results/{answer['id']}"), 410, "expired", "expired")
        assert len(app.state.facevox.store) == 0 and app.state.facevox.store.nbytes == 0  # the bytes are gone


def test_oldest_results_go_first_when_memory_is_full(astronaut_faces, astronaut_png):
    app = create_app(FakeReconstructor(astronaut_faces), max_store_bytes=30_000_000)  # one result is ~22 MB
    with TestClient(app) as client:
        first = post_photo(client, astronaut_png, "a.png").json()
        second = post_photo(client, astronaut_png, "a.png").json()
        assert first["id"] != second["id"]
        assert client.get(second["faces"][0]["files"]["glb"]).status_code == 200
        assert client.get(first["faces"][0]["files"]["glb"]).status_code == 410


def test_no_face_from_the_reconstructor_and_stl_needs_solid(astronaut_png, reconstructor, astronaut):
    import facevox

    with TestClient(create_app(NoFaces())) as client:
        assert_error(post_photo(client, astronaut_png, "a.png"), 422, "no_face", "no face")
    plain = facevox.Reconstructor(settings=facevox.Settings(solid=False, refine=False))
    with TestClient(create_app(plain)) as client:
        answer = post_photo(client, astronaut_png, "a.png").json()
        meshes = answer["faces"][0]["meshes"]
        assert set(meshes["surface"]["files"]) == {"glb", "obj", "ply", "json"}  # no surface STL without a solid body
        assert set(meshes["head"]["files"]) == {"glb", "obj", "stl", "ply", "json"}  # the head closes itself


def test_a_bug_gives_a_json_500_and_the_server_goes_on(astronaut_png):
    app = create_app(Broken())
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(2):
            assert_error(post_photo(client, astronaut_png, "a.png"), 500, "internal", "went wrong")
        assert app.state.facevox.pending == 0


# ------------------------------------------------------------------ page, docs, CLI

def test_page_docs_and_vendored_three_work_offline(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from another host
    imports = json.loads(re.search(r'<script type="importmap">(.*?)</script>', html, re.S).group(1))["imports"]
    assert client.get(imports["three"]).status_code == 200
    for url in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert client.get(url).status_code == 200, url
    # every module the page imports, and everything those import, is served
    app_js = client.get("/static/app.js").text
    seen, todo = set(), []
    for spec in re.findall(r"from '([^']+)'", app_js):
        todo.append(imports[spec] if spec in imports else imports["three/addons/"] + spec.removeprefix("three/addons/"))
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        response = client.get(url)
        assert response.status_code == 200, url
        for spec in re.findall(r"^import\s.*?from\s+'([^']+)'", response.text, re.M | re.S):
            if spec == "three":
                todo.append(imports["three"])
            elif spec.startswith("."):
                todo.append(str(httpx.URL("http://x" + url).join(spec).path))
    assert any(u.endswith("three.core.js") for u in seen) and any(u.endswith("GLTFLoader.js") for u in seen)
    assert client.get(imports["three"]).headers["content-encoding"] == "gzip"  # scripts are gzipped, meshes are not
    assert "content-encoding" not in client.get("/api/config").headers
    assert client.get("/docs").status_code == 200
    assert "/api/reconstruct" in client.get("/openapi.json").json()["paths"]


def test_serve_command(monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from facevox.cli import app as cli_app

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    result = CliRunner().invoke(cli_app, ["serve", "--port", "8123", "--queue", "3"])
    assert result.exit_code == 0, result.output
    (app, options), = calls
    assert options["host"] == "127.0.0.1" and options["port"] == 8123
    assert app.state.facevox.queue_size == 3 and app.state.facevox.reconstructor is None  # loaded at start-up
