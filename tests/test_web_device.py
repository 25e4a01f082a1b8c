"""The in-browser pipeline (web/static/device/) against the Python one, stage by stage, in headless
Chromium: the same photo or crop through both, compared within stated tolerances.

Skipped only when Chromium or the playwright package is missing (CI installs both: see .ci/run)."""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest
import trimesh
from PIL import Image

from chromium import chromium, drop_file, live_server, watched_page  # noqa: E402  (skips this module without Chromium)

# The in-page modules, loaded once per page: window.device = { ort, modules by name, reconstructor }.
LOAD = """async () => {
  if (window.device) return;
  const names = ['contract', 'photo', 'faces', 'crop', 'volume', 'landmarks', 'mesh', 'pose', 'export', 'pipeline'];
  const modules = await Promise.all(names.map((name) => import(`./static/device/${name}.js`)));
  const ort = await import('./static/vendor/onnxruntime-web/ort.wasm.min.mjs');
  const device = { ort, ...Object.fromEntries(names.map((name, i) => [name, modules[i]])) };
  device.reconstructor = await device.pipeline.Reconstructor.load(ort, 'models/');
  device.bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  window.device = device;
}"""


class RefuseReconstruction:
    """The server's reconstructor in these tests: device mode must never call it."""

    def reconstruct(self, *args, **kwargs):
        raise AssertionError("the server was asked to reconstruct a photo")


@pytest.fixture(scope="module")
def server():
    from facevox.web import create_app

    with live_server(create_app(RefuseReconstruction())) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def device_page(browser, server):
    page = browser.new_page()
    page.goto(server + "/")
    page.evaluate(LOAD)
    yield page
    page.close()


@pytest.fixture(scope="module")
def facevox_detector():
    from facevox.faces import OnnxFaceDetector

    return OnnxFaceDetector()


@pytest.fixture(scope="module")
def volume_model():
    from facevox.volume import VolumeModel

    return VolumeModel()


def b64(data) -> str:
    return base64.b64encode(bytes(data)).decode()


def test_page_is_cross_origin_isolated_and_serves_only_the_device_models(device_page, server):
    import urllib.error
    import urllib.request

    assert device_page.evaluate("crossOriginIsolated")  # so onnxruntime-web may use threads
    with urllib.request.urlopen(server + "/models/pipeline.json") as response:
        assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(server + "/models/ict_head.npz")  # the head is not part of the device pipeline
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(server + "/models/..%2Fapi.py")


@pytest.mark.parametrize("photo", ["astronaut_png", "grace_hopper_jpeg"])
def test_detection_and_crop_match_python(device_page, facevox_detector, photo, request):
    """The photo decoded, faces found (facevox's detector; grace_hopper is resized for it) and cropped:
    boxes within 0.02 pixel, scores within 1e-4, and by the same box the same crop: to the byte with
    OpenCV 4's warpAffine, whose fixed-point weights the page follows; OpenCV 5 interpolates a little
    differently (one grey level in about a tenth of the values, a few at sharp edges)."""
    from facevox import crop
    from facevox.faces import detect_faces
    from facevox.image import load_image

    data = request.getfixturevalue(photo)
    pixels = load_image(data)
    expected = detect_faces(pixels, [facevox_detector])
    found = device_page.evaluate("""async (b64) => {
      const { image } = await device.photo.decodePhoto(new Blob([device.bytes(b64)]), 64e6);
      const faces = await device.faces.detectFaces(image, device.reconstructor.detector, device.ort, device.reconstructor.contract);
      const matrix = device.crop.cropMatrix(faces[0].box, 192, device.reconstructor.rules);
      const edge = device.crop.cropMatrix([-60.3, -41.7, 95.2, 130.9], 192, device.reconstructor.rules);  // half outside the photo
      return { faces, matrix, crop: Array.from(device.crop.cropImage(image, matrix, 192)), size: [image.width, image.height],
               edge: Array.from(device.crop.cropImage(image, edge, 192)) };
    }""", b64(data))
    assert found["size"] == [pixels.shape[1], pixels.shape[0]]
    assert len(found["faces"]) == len(expected) >= 1
    for js, py in zip(found["faces"], expected):
        assert np.abs(np.array(js["box"]) - py.box).max() < 0.02
        assert js["score"] == pytest.approx(py.score, abs=1e-4)
    assert np.abs(np.array(found["matrix"]) - crop.crop_matrix(found["faces"][0]["box"])).max() < 1e-9  # the same rule
    python_crop = crop.crop_image(pixels, crop.crop_matrix(found["faces"][0]["box"]))  # OpenCV's warpAffine
    assert_same_crop(np.array(found["crop"]).reshape(192, 192, 3), python_crop)
    edge = crop.crop_image(pixels, crop.crop_matrix([-60.3, -41.7, 95.2, 130.9]))
    assert 0.2 < (edge.max(axis=2) == 0).mean() < 0.9  # part black (outside the photo), part photo
    assert_same_crop(np.array(found["edge"]).reshape(192, 192, 3), edge)


def assert_same_crop(page: np.ndarray, python: np.ndarray):
    import cv2

    difference = np.abs(page.astype(int) - python)
    if int(cv2.__version__.split(".")[0]) < 5:
        assert difference.max() == 0
    else:
        assert difference.max() <= 8 and difference.mean() < 0.25, (difference.max(), difference.mean())


def test_network_landmarks_and_front_depth_match_python(device_page, volume_model, astronaut):
    """A fixed crop (Python's, of the astronaut) through the network, mirrored, in both: landmarks within
    0.02 crop pixel, front depth within 0.02 voxel where both see the face, the face's outline the same
    but for 0.1 % of its columns; evidence within 1e-4; head pose within 0.01°."""
    from facevox import crop, mesh, pose
    from facevox.faces import OnnxFaceDetector, detect_faces
    from facevox.landmarks import face_evidence

    box = detect_faces(astronaut, [OnnxFaceDetector()])[0].box
    fixed = crop.crop_image(astronaut, crop.crop_matrix(box))
    output = volume_model(fixed)[0]
    points = output.landmarks(192)
    depth, mask = output.front_depth()
    js = device_page.evaluate("""async (b64) => {
      const r = device.reconstructor;
      const net = r.contract.network;
      const out = await device.volume.runNetwork(r.network, device.ort, device.bytes(b64), net, r.rules.mirror_68);
      const points = device.landmarks.fromHeatmaps(out.heatmaps, out.depth, 68, net.heatmap_size, 192);
      const front = device.mesh.frontDepth(out.volume, net.volume_depth, 192, 192, r.rules.surface.level);
      return { points, pose: device.pose.headPose(points, net.mean_landmarks_3d),
               evidence: device.landmarks.faceEvidence(out.heatmaps, 68, net.heatmap_size),
               depth: Array.from(front.depth, (d) => (Number.isFinite(d) ? d : -1)), mask: Array.from(front.mask) };
    }""", b64(fixed))
    assert np.abs(np.array(js["points"]) - points).max() < 0.02
    assert js["evidence"] == pytest.approx(face_evidence(output.heatmaps), abs=1e-4)
    assert np.abs(np.array(js["pose"]) - pose.head_pose(points, volume_model.info["mean_landmarks_3d"])).max() < 0.01
    js_mask = np.array(js["mask"], bool).reshape(192, 192)
    assert mask.sum() > 10_000 and (js_mask != mask).sum() <= 0.001 * mask.sum()
    both = js_mask & mask
    assert np.abs(np.array(js["depth"]).reshape(192, 192)[both] - depth[both]).max() < 0.02


def test_surface_mesh_matches_python_exactly(device_page, volume_model, astronaut):
    """The same front depth through both surface builders (outline limit, large pieces, height field,
    depth jumps): the same vertices in the same order, the same triangles."""
    from facevox import crop, mesh
    from facevox.faces import OnnxFaceDetector, detect_faces

    box = detect_faces(astronaut, [OnnxFaceDetector()])[0].box
    depth, mask = volume_model(crop.crop_image(astronaut, crop.crop_matrix(box)))[0].front_depth()
    mask[60:64, 60:64] = False  # a hole, and an island of stray columns to leave out
    mask[2:4, 2:5], depth[2:4, 2:5] = True, 50.0
    depth[100, 40:90] += 40.0  # a deep slit: the triangles across it go, and its columns
    expected = mesh.surface_from_depth(depth, mask)
    assert len(expected.vertices) < mask.sum() - 40  # the slit's columns left out
    js = device_page.evaluate("""([depth, mask]) => {
      const d = Float64Array.from(depth, (v, i) => (mask[i] ? v : Infinity));
      const s = device.mesh.surfaceFromDepth(d, Uint8Array.from(mask), 192, 192, device.reconstructor.rules.surface);
      return { vertices: Array.from(s.vertices), triangles: Array.from(s.triangles) };
    }""", [np.where(mask, depth, 0).ravel().tolist(), mask.ravel().astype(int).tolist()])
    assert len(expected.triangles) > 20_000
    assert np.array_equal(np.array(js["triangles"]).reshape(-1, 3), expected.triangles)
    assert np.abs(np.array(js["vertices"]).reshape(-1, 3) - expected.vertices).max() < 1e-9


def test_device_mode_makes_the_face_and_sends_no_image(browser, server, tmp_path, astronaut_png):
    """A photo dropped on the page in device mode (the default here) gives the 3D face and working
    downloads, while no request of the page or its worker carries a body: only GETs of the page, its
    scripts and the models (the server's reconstructor would fail the test if it were asked)."""
    from gltf_validator import assert_valid

    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    try:
        page, requests, errors = watched_page(context)
        page.goto(server + "/")
        assert page.evaluate("facevox.where") == "device"
        assert page.get_attribute("[data-where=device]", "aria-checked") == "true"
        drop_file(page, astronaut_png, "astronaut.png", "image/png")
        page.wait_for_function("['ready', 'error'].includes(document.body.dataset.state)", timeout=120_000)
        assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
        assert page.evaluate("facevox.ran") == "device"
        assert "Made on this device" in page.inner_text("#ran") and "not uploaded" in page.inner_text("#ran")
        assert page.locator("#overlay circle").count() == 68
        page.wait_for_timeout(300)
        if os.environ.get("FACEVOX_DEVICE_SCREENSHOT"):
            page.screenshot(path=os.environ["FACEVOX_DEVICE_SCREENSHOT"])
        url = page.eval_on_selector("#viewer canvas", "canvas => canvas.toDataURL('image/png')")
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))
        drawn = pixels[..., 3] > 0
        assert drawn.mean() > 0.08 and pixels[..., :3][drawn].std(axis=0).mean() > 12, "no coloured face in the 3D view"

        assert sorted(page.eval_on_selector_all("#downloads a", "links => links.map((a) => a.dataset.format)")) == ["glb", "json", "obj"]
        saved = {}
        for fmt in ("glb", "json"):
            with page.expect_download() as info:
                page.click(f"#downloads a[data-format={fmt}]")
            download = info.value
            assert download.suggested_filename == f"astronaut_face1.{fmt}"
            saved[fmt] = tmp_path / download.suggested_filename
            download.save_as(saved[fmt])
        assert_valid(saved["glb"].read_bytes(), tmp_path)
        mesh = trimesh.load(saved["glb"], force="mesh")
        assert len(mesh.faces) > 10_000 and mesh.visual.vertex_colors[:, :3].std() > 10
        record = json.loads(saved["json"].read_text())
        assert len(record["landmarks_3d"]) == 68 and record["mesh"]["triangles"] == len(mesh.faces)
        assert not errors, errors
    finally:
        context.close()

    assert requests
    for method, url, body in requests:
        assert method == "GET" and not body, f"{method} {url} carried {len(body or b'')} bytes"
        assert url.startswith((server + "/", "blob:", "data:")), url
    assert not any("/api/reconstruct" in url for _, url, _ in requests)
    assert any(url.endswith("/models/vrn-hg2-w192.onnx") for _, url, _ in requests)  # the network came from the server, as a GET


def test_device_mode_errors_are_shown_in_words(browser, server, grey_png):
    """A file that is no image, and a photo with no face, each give the page's error in words, made in
    the browser (the server's reconstructor is never asked)."""
    page = browser.new_page()
    try:
        page.goto(server + "/")
        drop_file(page, b"this is a text file, not a photo\n", "holiday.jpg", "image/jpeg")
        page.wait_for_function("document.body.dataset.state === 'error'", timeout=120_000)
        assert page.inner_text("#error-title") == "Cannot use this photo"
        assert "not an image" in page.inner_text("#error-text")
        drop_file(page, grey_png, "grey.png", "image/png")
        page.wait_for_function("document.getElementById('error-title').textContent === 'No face found'", timeout=60_000)
        assert page.is_visible("#drop")  # ready for another try
    finally:
        page.close()
