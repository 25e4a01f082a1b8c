"""The page as a static site: `facevox site DIR` writes a folder that any static file host serves, with
no Python behind it. Photos are reconstructed in the visitor's browser (web/static/device/,
onnxruntime-web), so the page offers only its "on this device" mode there.

Layout (the same URLs as `facevox serve`): index.html, static/ (the page's scripts, styles and vendored
libraries), models/ (the two networks, their JSON and models/pipeline.json), and _headers, which hosts
that read it (Netlify, Cloudflare Pages) use to make the page cross-origin isolated: onnxruntime-web
then runs on several threads; elsewhere on one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from facevox.rules import RULES, RULES_PATH
from facevox.volume import MODELS_DIR

STATIC = Path(__file__).parent / "static"
NO_SERVER = 'data-server="none"'
# The headers that make a page cross-origin isolated (SharedArrayBuffer, so WebAssembly threads).
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


def device_model_files() -> dict[str, Path]:
    """The files the in-browser pipeline fetches from models/, by name."""
    names = RULES["models"].values()
    files = {RULES_PATH.name: RULES_PATH}
    for name in names:
        for suffix in (".onnx", ".json"):
            files[f"{name}{suffix}"] = MODELS_DIR / f"{name}{suffix}"
    return files


def write_site(folder: str | Path) -> list[Path]:
    """Write the static site into `folder` (made if missing; files of an earlier site are replaced,
    nothing else there is touched). Returns the paths written, index.html first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    page = (STATIC / "index.html").read_text()
    if "<body " not in page:
        raise RuntimeError("index.html has no <body ...> tag to mark")
    index = folder / "index.html"
    index.write_text(page.replace("<body ", f"<body {NO_SERVER} ", 1))
    written = [index]
    if (folder / "static").exists():
        shutil.rmtree(folder / "static")
    shutil.copytree(STATIC, folder / "static", ignore=shutil.ignore_patterns("__pycache__", "index.html"))  # the page is at the top
    written.append(folder / "static")
    (folder / "models").mkdir(exist_ok=True)
    for name, source in device_model_files().items():
        shutil.copyfile(source, folder / "models" / name)
        written.append(folder / "models" / name)
    headers = folder / "_headers"
    headers.write_text("/*\n" + "".join(f"  {name}: {value}\n" for name, value in ISOLATION_HEADERS.items()))
    written.append(headers)
    return written
