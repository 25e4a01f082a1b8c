"""Driving the web page in Debian's Chromium, for bench/browser.py and the browser tests: the browser's
flags, the two ways the page is served (facevox's app, or a static site under `python -m http.server`)
and a photo dropped on the page as a person drops it."""

from __future__ import annotations

import base64
import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",  # WebGL on the CPU, no GPU needed
    "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
]
STARTUP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def live_server(app):
    """Serves the ASGI app on a free local port in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def static_server(folder: Path):
    """Serves a folder with `python -m http.server` (no special headers, as a plain static host); yields its base URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/index.html").close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "http.server did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def drop_file(page, data: bytes, name: str, mime: str) -> None:
    """Drop a file on the page, as a person dragging it from their desktop does (a real drop event)."""
    page.evaluate("""([b64, name, mime]) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], name, { type: mime }));
      window.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }""", [base64.b64encode(bytes(data)).decode(), name, mime])
