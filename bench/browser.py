"""The in-browser pipeline (facevox/web/static/device/) in headless Chromium on this machine's CPU
(WebAssembly): what a visitor downloads, how long the first and further photos take, memory, and how
closely it agrees with the Python pipeline.

    python bench/browser.py [--out bench/results/browser.json] [--group-photos ../shared/data/group-photos]

* sizes: the files the page fetches for device mode (models, onnxruntime-web, the page's own modules),
  in bytes and gzipped (level 6, as most servers send them; facevox serve does not gzip the .wasm).
* speed: two servers, each with a fresh browser (empty cache): `facevox serve`'s app, which makes the
  page cross-origin isolated (onnxruntime-web on min(4, cores) threads), and `facevox site` under
  `python -m http.server` (no isolation headers: one thread). A photo is dropped on the page as a
  person does; the time from the drop to the 3D face on show is "first" (models downloaded and
  compiled on the way) and, for the photos after it, "further". While it runs: the page's JS heap
  (CDP Performance.getMetrics, JSHeapUsedSize: the page's main thread, not its worker) and the
  proportional set size (PSS) of all of that Chromium's processes (worker, WebAssembly memory, GPU
  process and all), both at their peaks.
* agreement: the same photos through the Python pipeline (Reconstructor with facevox's own detector,
  Settings(mesh="surface"), which is what the page runs) and through the page's modules: faces found
  by each, and for faces matched by box IoU >= 0.5: landmark differences in % of the Python face's
  outer eye-corner distance (2D in the photo, 3D with depth), head pose differences in degrees, and the
  surface difference: the distance from each vertex of one mesh to the nearest vertex of the other,
  both ways, in % of that eye distance. For the portraits, the network's seconds on each side (both on one
  thread: `network_s`), run one after the other under the same load. Photos: the package portraits (astronaut, grace_hopper), a
  12-megapixel JPEG (the astronaut enlarged on a 4000×3000 frame: Python decodes it at 1/2 to 1/8 by
  JPEG's DCT scaling, the page by block means), and the group photos (numbers only, never the photos).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
RESULTS = ROOT / "bench" / "results"

from bench.chromium import ARGS, CHROMIUM, drop_file, live_server, static_server  # noqa: E402


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def package_photos() -> dict[str, tuple[bytes, str]]:
    from matplotlib import cbook
    from skimage.data import astronaut

    from bench.speed import phone_photo

    hopper = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    return {"astronaut": (encoded(astronaut(), "PNG"), "image/png"), "grace_hopper": (hopper, "image/jpeg"),
            "phone_12mp": (encoded(phone_photo(), "JPEG"), "image/jpeg")}


def sizes() -> dict:
    from facevox.web.site import STATIC, device_model_files

    def entry(path: Path) -> dict:
        data = path.read_bytes()
        return {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, 6))}

    files = {f"models/{name}": entry(path) for name, path in device_model_files().items()}
    ort = STATIC / "vendor" / "onnxruntime-web"
    files |= {f"static/vendor/onnxruntime-web/{p.name}": entry(p) for p in sorted(ort.glob("*.*js")) + sorted(ort.glob("*.wasm"))}
    files |= {f"static/device/{p.name}": entry(p) for p in sorted((STATIC / "device").glob("*.js"))}
    total = {key: sum(f[key] for f in files.values()) for key in ("bytes", "gzip_bytes")}
    return {"files": files, "device_mode_total": total}


class Refuse:
    def reconstruct(self, *args, **kwargs):
        raise RuntimeError("device mode must not ask the server")


def serve_app():
    """`facevox serve`'s app (cross-origin isolated), its server refusing to reconstruct."""
    from facevox.web import create_app

    return live_server(create_app(Refuse()))


@contextlib.contextmanager
def serve_static_site():
    """`facevox site` in a temporary folder under `python -m http.server` (not isolated)."""
    from facevox.web.site import write_site

    with tempfile.TemporaryDirectory(prefix="facevox-site-") as folder:
        write_site(Path(folder))
        with static_server(Path(folder)) as url:
            yield url


def chromium_pss_bytes() -> int:
    """The summed PSS of the Chromium processes started by this process (through playwright's driver)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    mine, total = {os.getpid()}, 0
    for _ in range(6):  # descendants, a few generations deep
        mine |= {pid for pid, parent in parents.items() if parent in mine}
    for pid in mine:
        try:
            if "chromium" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                continue
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def speed(playwright, serve, photos: dict, further: list[str]) -> dict:
    """Cold first photo and further photos through the page's UI, on a fresh browser."""
    with serve() as url:
        return _speed(playwright, url, photos, further)


def _speed(playwright, url: str, photos: dict, further: list[str]) -> dict:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        peak = {"js_heap_used_bytes": 0, "chromium_pss_bytes": 0}

        def sample():
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            peak["js_heap_used_bytes"] = max(peak["js_heap_used_bytes"], int(metrics["JSHeapUsedSize"]))
            peak["chromium_pss_bytes"] = max(peak["chromium_pss_bytes"], chromium_pss_bytes())

        started = time.perf_counter()
        page.goto(url + "/")
        page.wait_for_load_state("load")
        load_s = time.perf_counter() - started
        runs = []
        for name in [further[0], *further]:
            data, mime = photos[name]
            started = time.perf_counter()
            drop_file(page, data, f"{name}.{mime.split('/')[1]}", mime)
            while page.evaluate("document.body.dataset.state") not in ("ready", "error"):
                sample()
                time.sleep(0.1)
            seconds = time.perf_counter() - started
            assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
            timings = page.evaluate("facevox.timings")
            runs.append({"photo": name, "seconds": round(seconds, 2), "pipeline_s": round(sum(timings.values()), 2),
                         "stages_s": {k: round(v, 3) for k, v in timings.items()},
                         "faces": page.evaluate("document.querySelectorAll('#chooser-buttons button').length || 1")})
            sample()
        threads = page.evaluate("facevox.threads")
        isolated = page.evaluate("crossOriginIsolated")
    finally:
        browser.close()
    return {"page_load_s": round(load_s, 2), "cross_origin_isolated": isolated, "onnxruntime_threads": threads,
            "first_s": runs[0]["seconds"], "first_pipeline_s": runs[0]["pipeline_s"], "first_stages_s": runs[0]["stages_s"], "further": runs[1:],
            "further_median_s": round(statistics.median(r["seconds"] for r in runs[1:]), 2),
            "further_pipeline_median_s": round(statistics.median(r["pipeline_s"] for r in runs[1:]), 2),
            "peak_js_heap_used_mb": round(peak["js_heap_used_bytes"] / 1e6, 1),
            "peak_chromium_pss_mb": round(peak["chromium_pss_bytes"] / 1e6, 1)}


LOAD = """async () => {
  const ort = await import('./static/vendor/onnxruntime-web/ort.wasm.min.mjs');
  const { Reconstructor } = await import('./static/device/pipeline.js');
  ort.env.wasm.numThreads = 1;
  window.reconstructor = await Reconstructor.load(ort, 'models/');
}"""
RUN = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const result = await window.reconstructor.reconstruct(new Blob([bytes]));
  window.networkSeconds = result.timings.network;
  return result.faces.map((f) => ({ box: f.box, landmarks: f.landmarks_3d, pose: [f.yaw, f.pitch, f.roll],
                                    vertices: Array.from(f.mesh.vertices, (v) => Math.round(v * 1000) / 1000) }));
}"""


def iou(a, b) -> float:
    from facevox.faces import box_iou

    return box_iou(np.asarray(a), np.asarray(b))


def compare(python_faces, js_faces) -> list[dict]:
    from scipy.spatial import cKDTree

    rows = []
    for face in python_faces:
        match = max(js_faces, key=lambda j: iou(face.box, j["box"]), default=None)
        if match is None or iou(face.box, match["box"]) < 0.5:
            continue
        eyes = float(np.linalg.norm(face.landmarks_2d[36] - face.landmarks_2d[45]))
        marks = np.asarray(match["landmarks"])
        d2 = np.linalg.norm(marks[:, :2] - face.landmarks_3d[:, :2], axis=1) / eyes * 100
        d3 = np.linalg.norm(marks - face.landmarks_3d, axis=1) / eyes * 100
        js_vertices = np.asarray(match["vertices"]).reshape(-1, 3)
        py_vertices = face.mesh.vertices
        both_ways = np.r_[cKDTree(py_vertices).query(js_vertices)[0], cKDTree(js_vertices).query(py_vertices)[0]] / eyes * 100
        rows.append({"eye_distance_px": round(eyes, 1),
                     "landmarks_2d_mean_pct": float(d2.mean()), "landmarks_2d_max_pct": float(d2.max()),
                     "landmarks_3d_mean_pct": float(d3.mean()),
                     "pose_max_deg": float(np.abs(np.asarray(match["pose"]) - [face.yaw, face.pitch, face.roll]).max()),
                     "surface_median_pct": float(np.median(both_ways)), "surface_p95_pct": float(np.percentile(both_ways, 95)),
                     "vertices_python": len(py_vertices), "vertices_js": len(js_vertices)})
    return rows


def summary(rows: list[dict]) -> dict:
    if not rows:
        return {"matched": 0}
    keys = [k for k in rows[0] if k.endswith(("_pct", "_deg"))]
    out = {"matched": len(rows)}
    for key in keys:
        values = [r[key] for r in rows]
        out[key] = {"median": float(f"{np.median(values):.3g}"), "max": float(f"{np.max(values):.3g}")}
    return out


def agreement(playwright, photos: dict, group_folder: Path | None) -> dict:
    import facevox
    from facevox.faces import OnnxFaceDetector

    python = facevox.Reconstructor(detectors=[OnnxFaceDetector()], settings=facevox.Settings(mesh="surface"), threads=1)
    with serve_app() as url:
        return _agreement(playwright, url, python, photos, group_folder)


def _agreement(playwright, url: str, python, photos: dict, group_folder: Path | None) -> dict:
    from facevox.errors import NoFaceError

    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    results = {}
    try:
        page = browser.new_page()
        page.goto(url + "/")
        page.evaluate(LOAD)
        sets = {"portraits": {name: data for name, (data, _) in photos.items()}}
        if group_folder and group_folder.is_dir():
            sets["group_photos"] = {p.name: p.read_bytes() for p in sorted(group_folder.glob("*.jpg"))}
        for set_name, items in sets.items():
            per_photo, rows = {}, []
            for name, data in items.items():
                try:
                    python_faces = python.reconstruct(data)
                except NoFaceError:
                    python_faces = []
                js_faces = page.evaluate(RUN, base64.b64encode(data).decode())
                matched = compare(python_faces, js_faces)
                rows += matched
                entry = {"faces_python": len(python_faces), "faces_js": len(js_faces), "matched": len(matched)}
                if set_name == "portraits":
                    entry |= summary(matched)
                    # the network's three runs a face, one thread each side, one after the other on the same machine
                    entry["network_s"] = {"python_onnxruntime": round(python.timings.get("network", 0.0), 3),
                                          "browser_wasm": round(page.evaluate("window.networkSeconds"), 3)}
                per_photo[name] = entry
                print(set_name, name, entry, flush=True)
            results[set_name] = {"photos": per_photo, "faces_python": sum(p["faces_python"] for p in per_photo.values()),
                                 "faces_js": sum(p["faces_js"] for p in per_photo.values()), **summary(rows)}
    finally:
        browser.close()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "browser.json")
    parser.add_argument("--group-photos", type=Path, default=ROOT.parent / "shared" / "data" / "group-photos")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    photos = package_photos()
    result = {"machine": {"cpu_cores": os.cpu_count(), "platform": platform.platform(),
                          "chromium": subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip(),
                          "load_average_start": os.getloadavg()},
              "sizes": sizes()}
    with sync_playwright() as playwright:
        further = ["astronaut", "grace_hopper", "phone_12mp", "astronaut"]
        result["speed"] = {"facevox_serve_isolated": speed(playwright, serve_app, photos, further),
                           "static_site_http_server": speed(playwright, serve_static_site, photos, further)}
        print(json.dumps(result["speed"], indent=1), flush=True)
        result["agreement"] = agreement(playwright, photos, args.group_photos)
    result["machine"]["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
