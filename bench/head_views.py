"""The fitted heads of the package's portraits from the front, the side, below and behind: a picture
for the docs and the times of each step.

    PYTHONPATH=src:. python -m bench.head_views [--out docs/head.png] [--json bench/results/head_views.json]

Photos: the bundled astronaut (src/facevox/examples/astronaut.jpg) and matplotlib's grace_hopper.jpg.
Each row: textured views at yaw 0°, 45°, 90°, from below (pitch 40°) and from behind-left (yaw −135°),
then the same untextured. Rendered with `facevox.preview.render` (vertex colours read from the texture).
Times: `fit_head` once (fit, head, blendshapes, texture) and `head.fit_surface` alone, repeated
`--repeats` times (median wall clock and process CPU time), on this machine as loaded; the BLAS
thread count (OPENBLAS_NUM_THREADS) is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

import facevox
from facevox import head
from facevox.face import Mesh
from facevox.image import load_image
from facevox.pose import rotation_matrix
from facevox.preview import render, save_png

VIEWS = ((0.0, 0.0), (45.0, 0.0), (90.0, 0.0), (0.0, 40.0), (-135.0, 0.0))  # (yaw, pitch) of the head


def photos() -> dict[str, Path]:
    from matplotlib import cbook

    return {"astronaut": Path(facevox.__file__).parent / "examples" / "astronaut.jpg",
            "grace_hopper": Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))}


def texture_colours(fitted: head.Head) -> np.ndarray:
    """Each vertex's colour read from the texture at its UV."""
    size = fitted.texture.shape[0]
    col = np.clip((fitted.uvs[:, 0] * size).astype(int), 0, size - 1)
    row = np.clip(((1 - fitted.uvs[:, 1]) * size).astype(int), 0, size - 1)
    return fitted.texture[row, col]


def views(fitted: head.Head, size: int = 256) -> np.ndarray:
    """Two rows (textured, plain) of the head turned by each of VIEWS about its centre."""
    vertices = fitted.vertices.astype(np.float64)
    centre = (vertices.min(0) + vertices.max(0)) / 2
    flip = np.array([1.0, -1.0, -1.0])  # photo frame ↔ model frame (y up, z towards the viewer)
    colours = texture_colours(fitted)
    rows = []
    for textured in (True, False):
        pictures = []
        for yaw, pitch in VIEWS:
            turned = (((vertices - centre) * flip) @ rotation_matrix(yaw, pitch, 0.0).T) * flip + centre
            pictures.append(render(Mesh(turned, fitted.faces.astype(np.int64), colours if textured else None), size, 0.0, colour=textured))
        rows.append(np.concatenate(pictures, axis=1))
    return np.concatenate(rows, axis=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/head.png")
    parser.add_argument("--json", default="bench/results/head_views.json")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    recon = facevox.Reconstructor()
    model = head.load_model()
    head.uv_raster(model)  # made once per process; not counted below
    sheets, record = [], {}
    for name, path in photos().items():
        photo = load_image(path)
        face = recon(photo)[0]
        wall, cpu = time.perf_counter(), time.process_time()
        fitted = head.fit_head(face, photo)
        fit_head_s = {"wall": round(time.perf_counter() - wall, 3), "cpu": round(time.process_time() - cpu, 3)}
        sheets.append(views(fitted))
        landmarks, depth = head.crop_frame_inputs(face, face.extras["crop_matrix"])
        walls, cpus = [], []
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            head.fit_surface(model, landmarks, depth)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        record[name] = {"fit_head_s": fit_head_s, "yaw": face.yaw,
                        "fit_surface_ms": {"wall_median": round(1000 * float(np.median(walls)), 1), "cpu_median": round(1000 * float(np.median(cpus)), 1)},
                        "expression": {n: round(float(w), 2) for n, w in zip(fitted.blendshape_names, fitted.expression) if w >= 0.1}}
    Path(args.out).write_bytes(save_png(np.concatenate(sheets, axis=0)))
    settings = {"OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"), "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    Path(args.json).write_text(json.dumps({"benchmark": "head_views", "photos": record, "settings": settings}, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
