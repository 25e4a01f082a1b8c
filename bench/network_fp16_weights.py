"""Would a network file with fp16 weights do for the browser? It halves the download; this measures
what it changes. The weights of the shipped network are stored as fp16 and cast back to fp32 as the
session loads (Cast nodes that onnxruntime folds away: the arithmetic stays fp32), and the Python
pipeline runs with both files on the same photos.

    python bench/network_fp16_weights.py [--out bench/results/network_fp16_weights.json] [--group-photos ../shared/data/group-photos]

sizes: both files, in bytes and gzipped. agreement: as bench/browser.py's (faces by each, landmark and
surface differences in % of the eye distance) between the fp16-weights file and the shipped file. The
fp16 file is written to a temporary folder and never shipped.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.browser import package_photos, summary  # noqa: E402


def fp16_weights(source: Path, target: Path) -> None:
    """The model with every float32 initializer stored as float16, each behind a Cast to float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    casts, kept = [], []
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT:
            kept.append(tensor)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name + "_fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [tensor.name], to=TensorProto.FLOAT, name=tensor.name + "_cast"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(target))
    shutil.copyfile(source.with_suffix(".json"), target.with_suffix(".json"))


def compare(reference, other) -> list[dict]:
    from scipy.spatial import cKDTree

    from facevox.faces import box_iou

    rows = []
    for face in reference:
        match = max(other, key=lambda f: box_iou(face.box, f.box), default=None)
        if match is None or box_iou(face.box, match.box) < 0.5:
            continue
        eyes = float(np.linalg.norm(face.landmarks_2d[36] - face.landmarks_2d[45]))
        d2 = np.linalg.norm(match.landmarks_3d[:, :2] - face.landmarks_3d[:, :2], axis=1) / eyes * 100
        both_ways = np.r_[cKDTree(face.mesh.vertices).query(match.mesh.vertices)[0],
                          cKDTree(match.mesh.vertices).query(face.mesh.vertices)[0]] / eyes * 100
        rows.append({"landmarks_2d_mean_pct": float(d2.mean()), "landmarks_2d_max_pct": float(d2.max()),
                     "pose_max_deg": float(np.abs(np.array([match.yaw - face.yaw, match.pitch - face.pitch, match.roll - face.roll])).max()),
                     "surface_median_pct": float(np.median(both_ways)), "surface_p95_pct": float(np.percentile(both_ways, 95))})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "network_fp16_weights.json")
    parser.add_argument("--group-photos", type=Path, default=ROOT.parent / "shared" / "data" / "group-photos")
    args = parser.parse_args()
    import facevox
    from facevox.errors import NoFaceError
    from facevox.faces import OnnxFaceDetector
    from facevox.volume import model_files

    shipped, _ = model_files()
    folder = Path(tempfile.mkdtemp(prefix="facevox-fp16-"))
    half = folder / shipped.name
    fp16_weights(shipped, half)
    sizes = {name: {"bytes": path.stat().st_size, "gzip_bytes": len(gzip.compress(path.read_bytes(), 6))}
             for name, path in (("fp32", shipped), ("fp16_weights", half))}
    detectors = [OnnxFaceDetector()]
    settings = facevox.Settings(mesh="surface")
    full = facevox.Reconstructor(detectors=detectors, settings=settings)
    halved = facevox.Reconstructor(model_path=half, detectors=detectors, settings=settings)
    sets = {"portraits": {name: data for name, (data, _) in package_photos().items()}}
    if args.group_photos.is_dir():
        sets["group_photos"] = {p.name: p.read_bytes() for p in sorted(args.group_photos.glob("*.jpg"))}
    agreement = {}
    for set_name, items in sets.items():
        rows, faces = [], {"fp32": 0, "fp16_weights": 0}
        for name, data in items.items():
            found = {}
            for key, reconstructor in (("fp32", full), ("fp16_weights", halved)):
                try:
                    found[key] = reconstructor.reconstruct(data)
                except NoFaceError:
                    found[key] = []
                faces[key] += len(found[key])
            rows += compare(found["fp32"], found["fp16_weights"])
        agreement[set_name] = {"faces": faces, **summary(rows)}
        print(set_name, agreement[set_name], flush=True)
    shutil.rmtree(folder)
    args.out.write_text(json.dumps({"sizes": sizes, "agreement": agreement}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
