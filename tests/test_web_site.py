"""`facevox site DIR`: the page as a static site, served by a plain static file server
(`python -m http.server`, which sends no cross-origin isolation headers), in headless Chromium."""

from __future__ import annotations

import json

import pytest
import trimesh
from typer.testing import CliRunner

from chromium import chromium, drop_file, static_server, watched_page  # noqa: E402  (skips this module without Chromium)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from facevox.cli import app

    folder = tmp_path_factory.mktemp("site")
    result = CliRunner().invoke(app, ["site", str(folder)])
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def served_site(site):
    with static_server(site) as url:
        yield url


def test_site_folder_holds_the_page_scripts_and_models(site):
    assert 'data-server="none"' in (site / "index.html").read_text()
    assert (site / "static" / "device" / "pipeline.js").exists()
    assert (site / "static" / "vendor" / "onnxruntime-web" / "ort-wasm-simd-threaded.wasm").exists()
    rules = json.loads((site / "models" / "pipeline.json").read_text())
    for name in rules["models"].values():
        assert (site / "models" / f"{name}.onnx").stat().st_size > 100_000
        assert json.loads((site / "models" / f"{name}.json").read_text())
    assert not (site / "models" / "ict_head.npz").exists()
    assert "Cross-Origin-Embedder-Policy: require-corp" in (site / "_headers").read_text()


def test_site_works_from_a_plain_static_server(served_site, tmp_path, astronaut_png):
    """No server mode offered; a dropped photo gives the face on one thread (no cross-origin isolation
    from http.server) and a GLB to download; every request a GET without a body."""
    with chromium() as browser:
        page, requests, errors = watched_page(browser.new_context(accept_downloads=True))
        try:
            page.goto(served_site + "/")
            assert not page.evaluate("crossOriginIsolated")
            assert page.is_hidden("[data-where=server]") and page.is_hidden("text=API")
            drop_file(page, astronaut_png, "astronaut.png", "image/png")
            page.wait_for_function("['ready', 'error'].includes(document.body.dataset.state)", timeout=120_000)
            assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
            assert page.evaluate("[facevox.ran, facevox.threads]") == ["device", 1]
            with page.expect_download() as info:
                page.click("#downloads a[data-format=glb]")
            saved = tmp_path / "face.glb"
            info.value.save_as(saved)
            assert len(trimesh.load(saved, force="mesh").faces) > 10_000
            assert not errors, errors
        finally:
            page.close()
    assert all(method == "GET" and not body for method, _, body in requests)
