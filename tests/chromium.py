"""Shared by the browser tests: Debian's Chromium driven by Playwright (bench/chromium.py serves the
page and drops photos on it, for the tests and bench/browser.py alike).

Importing it skips the importing test module where Chromium or the playwright package is missing
(CI installs both: see .ci/run)."""

from __future__ import annotations

import contextlib
import os

import pytest

from bench.chromium import ARGS, CHROMIUM, drop_file, live_server, static_server  # noqa: F401  (for the tests)

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing (pip install playwright)")


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
