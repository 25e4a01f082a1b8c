"""Shared by the browser tests: Debian's Chromium driven by Playwright, and a live uvicorn server.

Importing it skips the importing test module where Chromium or the playwright package is missing
(CI installs both: see .ci/run)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",  # WebGL on the CPU, no GPU needed
    "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
]

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing (pip install playwright)")


@contextlib.contextmanager
def live_server(app):
    """Serves the ASGI app on a free local port in a thread; yields its base URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def chromium():
    """A headless Chromium browser."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def watched_page(context):
    """A new page of the browser context → (page, requests, errors): every request of the context as
    (method, url, body), and the page's script errors and console errors, recorded as they come."""
    requests, errors = [], []
    context.on("request", lambda r: requests.append((r.method, r.url, r.post_data_buffer)))
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    return page, requests, errors
