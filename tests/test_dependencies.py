"""`pip install facevox` on the newest Pythons (issue 15): the project's runtime dependencies resolve to
binary wheels for Python 3.13 and 3.14 on this platform, with NumPy 2 and without MediaPipe.

Runs pip against the package index (a dry run: nothing is installed); skipped only when the index
cannot be reached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.13", "3.14")
NOT_AT_RUN_TIME = {"mediapipe"}


def index_url() -> str:
    configured = os.environ.get("PIP_INDEX_URL") or subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True).stdout.strip()
    return configured or "https://pypi.org/simple/"


def resolve(python: str, folder: Path) -> subprocess.CompletedProcess:
    """pip's dry-run install of this project for `python`, wheels only; its report in folder/report.json."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
               "--python-version", python, "--target", str(folder / "target"), "--report", str(folder / "report.json"),
               "--quiet", str(ROOT)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    url = index_url().rstrip("/") + "/numpy/"
    try:
        urllib.request.urlopen(url, timeout=20).close()
    except (urllib.error.URLError, OSError) as error:
        pytest.skip(f"package index unreachable ({url}: {error})")
    folders = {python: tmp_path_factory.mktemp(f"python{python}") for python in PYTHONS}
    with ThreadPoolExecutor(len(PYTHONS)) as pool:  # the two resolutions at once: each waits mostly on the index
        runs = dict(zip(PYTHONS, pool.map(resolve, PYTHONS, folders.values())))
    return {python: (runs[python], folders[python] / "report.json") for python in PYTHONS}


@pytest.mark.parametrize("python", PYTHONS)
def test_runtime_dependencies_are_wheels_for_new_pythons_with_numpy_2(resolutions, python):
    run, report = resolutions[python]
    assert run.returncode == 0, f"no wheels for Python {python}:\n{run.stderr[-3000:]}"
    installed = {item["metadata"]["name"].lower(): item for item in json.loads(report.read_text())["install"]}
    assert not NOT_AT_RUN_TIME & set(installed)
    assert int(installed["numpy"]["metadata"]["version"].split(".")[0]) >= 2
    assert all(item["download_info"]["url"].endswith(".whl") for name, item in installed.items() if name != "facevox")
