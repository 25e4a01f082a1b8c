"""What the exported mesh's outline limit costs in dense error (issue 2), and what looser limits give.

    PYTHONPATH=src:. FACEVOX_SFM=... python -m bench.outline_limit [--count 96] [--slopes 4,6,8,12] [--out FILE]

The exported surface is the network's front depth as a height field with the columns near the
outline pulled forward (`facevox.mesh.limit_outline`: at most OUTLINE_SLOPE voxels behind the next
column in, against spikes where the outline's columns cross 0.5 far back) and small islands dropped.
On renders outside the benchmark (seeds from --seed-base, the shipped model with the mirror average),
the dense error of that surface (as bench/accuracy_synthetic.py measures it) for each limit slope, and
with no limit, by |yaw| bin. Writes bench/results/outline_limit.json (or --out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench import metrics
from bench.accuracy_synthetic import BINS, DEFAULT_PHOTOS, VISIBILITY_TOLERANCE, yaw_bin
from facevox import mesh
from facevox.volume import VolumeModel
from training import sfm
from training.sources.synthetic import SyntheticFaces, load_photos
from training.splits import real_faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=96, help="faces (a multiple of 16)")
    parser.add_argument("--seed-base", type=int, default=2_000_100_000, help="outside the benchmark's seeds")
    parser.add_argument("--slopes", default="4,6,8,12")
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS), help="real-faces folder for backgrounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "outline_limit.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = sfm.load()
    source = SyntheticFaces(model, load_photos(real_faces(Path(args.photos), "val")), device="cpu")
    net = VolumeModel(None, threads=args.threads)
    slopes = {f"slope {s}": float(s) for s in args.slopes.split(",")} | {"no limit": None}
    errors = {name: {b: [] for b in BINS} for name in slopes}
    for batch_index in range(args.count // 16):
        batch = source.sample(16, args.seed_base + batch_index)
        crops = (batch.image.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        outputs = [o for k in range(0, 16, 4) for o in net(crops[k : k + 4])]
        marks, vertices = batch.landmarks.numpy().astype(np.float64), batch.vertices.numpy().astype(np.float64)
        for i, output in enumerate(outputs):
            points = vertices[i][metrics.visible_vertices(vertices[i], batch.depth.numpy()[i], VISIBILITY_TOLERANCE)]
            scale, group = metrics.interocular(marks[i]), yaw_bin(float(batch.pose[i, 0]))
            depth, mask = mesh.front_depth(output.volume)
            for name, slope in slopes.items():
                made = mesh.surface_from_depth(depth, mask, slope)
                errors[name][group].append(metrics.dense_error(points, made.vertices, made.triangles, scale))
    result = {"what": __doc__.splitlines()[0], "model": net.info.get("name"), "training_steps": net.info.get("training_steps"),
              "faces": args.count, "seed_base": args.seed_base, "shipped_slope": mesh.OUTLINE_SLOPE,
              "dense_error_percent_iod": {name: {b: {"mean": round(100 * float(np.mean(v)), 3), "faces": len(v)}
                                                 for b, v in by_bin.items()} for name, by_bin in errors.items()}}
    for name, by_bin in result["dense_error_percent_iod"].items():
        print(name, " / ".join(f"{v['mean']:.2f}" for v in by_bin.values()))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
