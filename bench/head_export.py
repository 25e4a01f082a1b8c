"""The head's and the surface's files for the package portraits: sizes, writing times, the GLB's morph
targets, the Khronos validator's verdict and the STL's closure.

    python -m bench.head_export [--runs 3]

Portraits: facevox's examples/astronaut.jpg and matplotlib's grace_hopper.jpg. Times are the median of
--runs writes of each file, one process, wall clock. The validator (npm gltf-validator) is run with
node from cache/node/ when the tests have installed it there; otherwise its columns are null.
Writes bench/results/head_export.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

import facevox
from facevox.export import FORMATS, export_files

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VALIDATOR = ROOT / "cache" / "node" / "node_modules" / "gltf-validator"


def portraits() -> dict[str, Path]:
    from matplotlib import cbook

    return {"astronaut": Path(facevox.__file__).parent / "examples" / "astronaut.jpg",
            "grace_hopper": Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))}


def validate(data: bytes) -> dict | None:
    if not (VALIDATOR / "package.json").exists():
        return None
    with tempfile.NamedTemporaryFile(suffix=".glb") as file:
        file.write(data)
        file.flush()
        script = ("const v = require(process.argv[1]); v.validateBytes(new Uint8Array(require('fs').readFileSync(process.argv[2])))"
                  ".then((r) => console.log(JSON.stringify(r.issues)))")
        result = subprocess.run(["node", "-e", script, str(VALIDATOR), file.name], capture_output=True, text=True, check=True)
    issues = json.loads(result.stdout)
    return {"errors": issues["numErrors"], "warnings": issues["numWarnings"], "infos": issues["numInfos"]}


def morph_targets(data: bytes) -> dict:
    length = struct.unpack("<I", data[12:16])[0]
    gltf = json.loads(data[20 : 20 + length])
    mesh = gltf["meshes"][0]
    targets = mesh["primitives"][0].get("targets", [])
    stored = sum(gltf["accessors"][t["POSITION"]].get("sparse", {}).get("count", 0) for t in targets)
    vertices = gltf["accessors"][mesh["primitives"][0]["attributes"]["POSITION"]]["count"]
    return {"targets": len(targets), "names": len(mesh.get("extras", {}).get("targetNames", [])),
            "stored_offsets": stored, "dense_offsets": len(targets) * vertices}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    reconstructor = facevox.Reconstructor(settings=facevox.Settings(solid=True, mesh="both"))
    rows = []
    for name, path in portraits().items():
        face = reconstructor(path, all_faces=False)[0]
        for mesh in ("head", "surface"):
            for fmt in FORMATS:
                times, files = [], None
                for _ in range(args.runs):
                    started = time.perf_counter()
                    files = export_files(face, fmt, "face", mesh=mesh)
                    times.append(time.perf_counter() - started)
                row = {"portrait": name, "mesh": mesh, "format": fmt, "files": sorted(files),
                       "bytes": sum(len(d) for d in files.values()), "seconds_median": round(statistics.median(times), 4)}
                data = files[f"face.{fmt}"]
                if fmt == "glb":
                    row["validator"] = validate(data)
                    if mesh == "head":
                        row["morph_targets"] = morph_targets(data)
                if fmt == "stl":
                    body = trimesh.load(io.BytesIO(data), file_type="stl")
                    row |= {"watertight": bool(body.is_watertight), "bodies": int(body.body_count),
                            "extent_mm": np.round(body.extents, 1).tolist()}
                rows.append(row)
                print(json.dumps(row))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "head_export.json"
    out.write_text(json.dumps({"command": "python -m bench.head_export --runs %d" % args.runs, "cpu_count": os.cpu_count(),
                               "rows": rows}, indent=1) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
