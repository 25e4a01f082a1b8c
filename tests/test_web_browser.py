"""The web page in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Skipped only when Chromium or the playwright package is missing (CI installs both: see .ci/run).
Set FACEVOX_WEB_SCREENSHOT=docs/web.png to also save the page with the astronaut's face loaded.
"""

from __future__ import annotations

import base64
import io
import os
import re

import numpy as np
import pytest
import trimesh
from PIL import Image

from chromium import chromium, live_server  # noqa: E402  (skips this module without Chromium)


@pytest.fixture(scope="module")
def server(reconstructor):
    from facevox.web import create_app

    with live_server(create_app(reconstructor)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.goto(server + "/")
    page.click("[data-where=server]")  # these tests are of the server's mode (tests/test_web_device.py: this device's)
    yield page
    context.close()


def canvas_pixels(page) -> np.ndarray:
    url = page.eval_on_selector("#viewer canvas", "canvas => canvas.toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def wait_for_state(page, *states, timeout=90_000):
    page.wait_for_function(f"{list(states)!r}.includes(document.body.dataset.state)", timeout=timeout)
    return page.evaluate("document.body.dataset.state")


def test_upload_view_and_download(page, tmp_path, astronaut_png):
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(astronaut_png)
    assert page.is_visible("text=Drop a photo here")
    page.set_input_files("#file", str(photo))
    assert page.is_visible("#status")  # the progress state shows while it works
    assert wait_for_state(page, "ready", "error") == "ready", page.inner_text("#error")
    page.wait_for_timeout(300)

    pixels = canvas_pixels(page)
    height, width = pixels.shape[:2]
    drawn = pixels[..., 3] > 0
    assert drawn.mean() > 0.08, "the face covers too little of the 3D view"
    colours = pixels[..., :3][drawn].astype(float)
    assert colours.std(axis=0).mean() > 12, "the 3D view is one flat colour"
    assert drawn[height // 2, width // 2], "the face is not in the middle of the view"
    ys, xs = np.nonzero(drawn)
    assert abs(xs.mean() / width - 0.5) < 0.1 and abs(ys.mean() / height - 0.5) < 0.15
    facts = page.inner_text("#facts")  # the pose in whole degrees, never "-0°"
    assert re.fullmatch(r"yaw\s+-?\d+°\s+pitch\s+-?\d+°\s+roll\s+-?\d+°", facts.strip(), re.IGNORECASE) and "-0°" not in facts, facts

    page.click("[data-look=shaded]")  # the looks really change the picture
    page.wait_for_timeout(200)
    shaded = canvas_pixels(page)
    assert np.abs(shaded[..., :3].astype(int) - pixels[..., :3]).mean() > 3
    page.click("[data-look=wireframe]")
    page.wait_for_timeout(200)
    assert np.abs(canvas_pixels(page)[..., :3].astype(int) - shaded[..., :3]).mean() > 3
    page.click("[data-look=colour]")
    page.mouse.move(640, 420)  # turn the face, then reset the view
    page.mouse.down()
    page.mouse.move(760, 380, steps=8)
    page.mouse.up()
    page.wait_for_timeout(800)
    assert np.abs(canvas_pixels(page)[..., :3].astype(int) - pixels[..., :3]).mean() > 3
    page.click("#reset-view")
    page.wait_for_timeout(300)
    assert np.abs(canvas_pixels(page)[..., :3].astype(int) - pixels[..., :3]).mean() < 3

    assert page.locator("#overlay circle").count() == 68 and page.locator("#overlay rect").count() == 1
    assert page.is_hidden("#chooser")  # one face: no chooser
    assert page.locator("#downloads a").count() == 5
    if os.environ.get("FACEVOX_WEB_SCREENSHOT"):
        page.screenshot(path=os.environ["FACEVOX_WEB_SCREENSHOT"])

    for fmt in ("glb", "stl"):
        with page.expect_download() as info:
            page.click(f"#downloads a[data-format={fmt}]")
        download = info.value
        assert download.suggested_filename == f"astronaut_face1.{fmt}"
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        mesh = trimesh.load(saved, force="mesh")
        assert len(mesh.faces) > 1000
        if fmt == "stl":
            assert mesh.is_watertight
    assert not page.errors, page.errors


def test_errors_are_shown_in_words(page, tmp_path, grey_png):
    text = tmp_path / "holiday.jpg"
    text.write_text("this is a text file, not a photo\n")
    page.set_input_files("#file", str(text))
    assert wait_for_state(page, "ready", "error") == "error"
    assert page.is_visible("#error")
    assert page.inner_text("#error-title") == "Not an image"
    assert "not an image" in page.inner_text("#error-text")

    grey = tmp_path / "grey.png"
    grey.write_bytes(grey_png)
    page.set_input_files("#file", str(grey))
    page.wait_for_function("document.getElementById('error-title').textContent === 'No face found'", timeout=60_000)
    assert "No face was found" in page.inner_text("#error-text")
    assert page.is_visible("#drop")  # ready for another try
    assert not [e for e in page.errors if "status of 4" not in e], page.errors  # only the expected 4xx loads


def test_phone_width(browser, server, tmp_path, grace_hopper_jpeg):
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(server + "/")
        page.click("[data-where=server]")
        assert page.get_attribute("#camera", "capture") == "user"
        assert page.is_visible("label[for=camera]")  # a touch screen gets the camera button
        photo = tmp_path / "grace_hopper.jpg"
        photo.write_bytes(grace_hopper_jpeg)
        page.set_input_files("#file", str(photo))
        assert wait_for_state(page, "ready", "error") == "ready", page.inner_text("#error")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
        viewer = page.locator("#viewer").bounding_box()
        assert viewer["width"] > 330 and viewer["height"] > 300
    finally:
        context.close()



def test_several_faces_get_a_chooser(page, tmp_path, two_faces_png):
    photo = tmp_path / "two.png"
    photo.write_bytes(two_faces_png)
    page.set_input_files("#file", str(photo))
    assert wait_for_state(page, "ready", "error") == "ready", page.inner_text("#error")
    assert page.text_content("#chooser-label") == "2 faces found"
    buttons = page.locator("#chooser-buttons button")
    assert buttons.count() == 2 and buttons.nth(0).get_attribute("aria-checked") == "true"
    page.click("#zoom")  # the whole photo shows both boxes
    assert page.locator("#overlay rect").count() == 2
    first = canvas_pixels(page)
    first_link = page.get_attribute("#downloads a[data-format=glb]", "href")
    buttons.nth(1).click()
    assert wait_for_state(page, "ready", "error") == "ready"
    assert buttons.nth(1).get_attribute("aria-checked") == "true"
    assert page.get_attribute("#downloads a[data-format=glb]", "href") == first_link.replace("face1.glb", "face2.glb")
    page.wait_for_timeout(300)
    assert np.abs(canvas_pixels(page)[..., :3].astype(int) - first[..., :3]).mean() > 3  # another face on show
    assert not page.errors, page.errors


def influences(page, *names) -> list[float]:
    return page.evaluate(f"(() => {{ const mesh = facevox.viewer.surface; return {list(names)!r}.map("
                         f"(name) => mesh.morphTargetInfluences[mesh.morphTargetDictionary[name]]); }})()")


def test_head_blendshapes_play_on_the_morph_targets(page, tmp_path, astronaut_png):
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(astronaut_png)
    page.set_input_files("#file", str(photo))
    assert wait_for_state(page, "ready", "error") == "ready", page.inner_text("#error")
    assert page.evaluate("facevox.mesh") == "head" and page.is_visible("#expression")
    names = page.evaluate("Object.keys(facevox.viewer.surface.morphTargetDictionary)")
    assert len(names) == 53 and {"jawOpen", "eyeBlinkLeft", "mouthSmileLeft", "browDownLeft"} <= set(names)
    fitted = page.evaluate("facevox.viewer.surface.morphTargetInfluences.slice()")
    assert any(w > 0 for w in fitted)  # the GLB's weights: the expression fitted to the photo
    page.wait_for_timeout(300)
    before = canvas_pixels(page)

    page.locator("[data-expression=jaw]").fill("1")  # the jaw slider drives jawOpen
    page.wait_for_timeout(300)
    assert influences(page, "jawOpen") == [1]
    opened = canvas_pixels(page)
    changed = np.abs(opened[..., :3].astype(int) - before[..., :3]).max(2) > 24
    assert changed.mean() > 0.002, "opening the jaw did not change the picture"
    rows = np.nonzero(changed)[0]
    drawn_rows = np.nonzero(before[..., 3] > 0)[0]
    assert rows.mean() > drawn_rows.mean(), "the change is not in the lower part of the head"

    page.locator("[data-expression=blink]").fill("1")
    page.locator("[data-expression=smile]").fill("0.8")
    page.locator("[data-expression=brows-up]").fill("0.5")
    assert influences(page, "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileRight", "browOuterUpLeft") == [1, 1, 0.8, 0.5]
    page.wait_for_timeout(200)
    assert np.abs(canvas_pixels(page)[..., :3].astype(int) - opened[..., :3]).mean() > 0.05

    page.click("#expression-neutral")
    assert max(page.evaluate("facevox.viewer.surface.morphTargetInfluences.slice()")) == 0
    assert page.locator("[data-expression=jaw]").input_value() == "0"
    page.click("#expression-photo")
    assert page.evaluate("facevox.viewer.surface.morphTargetInfluences.slice()") == pytest.approx(fitted)

    page.click("[data-mesh=surface]")  # the surface: no blendshapes, its own downloads
    assert wait_for_state(page, "ready", "error") == "ready"
    assert page.is_hidden("#expression")
    assert page.get_attribute("#downloads a[data-format=glb]", "href").endswith("face1.surface.glb?download=1")
    assert page.evaluate("facevox.viewer.surface.morphTargetInfluences") is None
    page.click("[data-mesh=head]")
    assert wait_for_state(page, "ready", "error") == "ready" and page.is_visible("#expression")

    # last, as the page's clock stays fake. Paused, it moves only by run_for, which fires each animation
    # frame at its own time: the frames land on the peaks exactly, however slow the machine.
    page.clock.install()
    page.clock.pause_at(page.evaluate("Date.now()") + 1000)
    page.locator("#expression-play").dispatch_event("click")
    page.clock.run_for(800)  # the smile's peak
    assert influences(page, "mouthSmileLeft") == pytest.approx([1], abs=1e-3)
    page.clock.run_for(1700)  # the jaw's peak, the smile gone
    assert influences(page, "mouthSmileLeft", "jawOpen") == pytest.approx([0, 0.8], abs=1e-3)
    page.locator("#expression-neutral").dispatch_event("click")  # stops the animation
    page.clock.run_for(1000)
    assert influences(page, "jawOpen", "browOuterUpLeft") == [0, 0]
    assert not page.errors, page.errors


def test_3d_and_ar_view_uses_model_viewer(page, tmp_path, astronaut_png):
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(astronaut_png)
    page.set_input_files("#file", str(photo))
    assert wait_for_state(page, "ready", "error") == "ready", page.inner_text("#error")
    page.click("#ar-open")
    page.wait_for_function("(() => { const v = document.querySelector('#ar-slot model-viewer');"
                           " return customElements.get('model-viewer') && v && v.loaded; })()", timeout=90_000)
    viewer = page.locator("#ar-slot model-viewer")
    assert viewer.get_attribute("src").endswith("/face1.glb") and viewer.get_attribute("ar") is not None
    page.wait_for_timeout(1000)
    picture = np.asarray(Image.open(io.BytesIO(viewer.screenshot())).convert("RGB")).astype(float)
    assert picture.std(axis=(0, 1)).mean() > 12, "model-viewer shows no head"
    if os.environ.get("FACEVOX_AR_SCREENSHOT"):
        page.screenshot(path=os.environ["FACEVOX_AR_SCREENSHOT"])
    page.click("#ar-close")
    assert page.is_hidden("#ar-dialog")
    page.click("#reset-view")  # the page's own 3D view still draws the head
    page.wait_for_timeout(300)
    assert (canvas_pixels(page)[..., 3] > 0).mean() > 0.05
    assert not page.errors, page.errors
