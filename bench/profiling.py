"""Profiled views of real photos (training.sources.real): black frames, head coverage, speed, a preview.

    PYTHONPATH=src:. python -m bench.profiling                               # → bench/results/profiling.json
    PYTHONPATH=src:. python -m bench.profiling --preview /tmp/profiled.png   # also a sheet at yaw 30/60/80/90 (not committed)
    PYTHONPATH=src:. python -m bench.profiling --head ''                     # without the ICT head behind the faces

On the val split of the real-faces labels (cache/labels, cache/photos), all samples profiled
(original_fraction 0), with the ICT head behind turned faces (--head, default cache/ict-face), batches
of 16 from fixed seeds:
- `black_share`: share of pure-black pixels (all channels ≤ 3/255) of the final training images, per
  |yaw| bin of the turned face, beside the same figure for the photos as taken (original_fraction 1),
  which shows how much black the photos themselves hold;
- `samples_per_s`: RealFaces.sample(16) on CPU with one torch thread, median of 3 after a warm-up,
  wall and process CPU seconds (on a shared machine the CPU seconds are the figure to trust), with
  the head and (`speed_without_head`) without it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from training import sfm
from training.sources.real import RealFaces

OUT = Path(__file__).parent / "results" / "profiling.json"
CACHE = Path(__file__).resolve().parents[1] / "cache"
BINS = ((0, 30), (30, 60), (60, 90.1))
PREVIEW_YAWS = (30, 60, 80, 90)


def black_pixels(image: torch.Tensor) -> torch.Tensor:
    """(b,) share of pure-black pixels in (b, 3, s, s) images in [0, 1]."""
    return (image.amax(1) <= 3 / 255).float().mean((1, 2))


def black_by_yaw(source: RealFaces, batches: int) -> dict:
    shares, yaws = [], []
    for seed in range(batches):
        batch = source.sample(16, seed=10_000 + seed)
        shares.append(black_pixels(batch.image))
        yaws.append(batch.pose[:, 0].abs())
    shares, yaws = torch.cat(shares), torch.cat(yaws)
    out = {"samples": len(shares), "all": round(float(shares.mean()), 5),
           "samples_with_any_black_over_1pct": round(float((shares > 0.01).float().mean()), 4)}
    for low, high in BINS:
        chosen = (yaws >= low) & (yaws < high)
        out[f"yaw_{low}_{int(high)}"] = {"samples": int(chosen.sum()), "share": round(float(shares[chosen].mean()), 5) if chosen.any() else None}
    return out


def speed(source: RealFaces, repeats: int = 3) -> dict:
    torch.set_num_threads(1)
    source.sample(16, seed=0)
    walls, cpus = [], []
    for seed in range(1, repeats + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        source.sample(16, seed=seed)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"batch": 16, "threads": 1, "wall_s": round(float(np.median(walls)), 3), "cpu_s": round(float(np.median(cpus)), 3),
            "samples_per_s_cpu": round(16 / float(np.median(cpus)), 2)}


def preview(source: RealFaces, path: Path) -> None:
    import cv2

    rows = []
    for yaw in PREVIEW_YAWS:
        image = source.sample(8, seed=yaw, yaw=yaw).image.permute(0, 2, 3, 1).cpu().numpy()
        rows.append(np.concatenate(list((image * 255).round().astype(np.uint8)), 1))
    cv2.imwrite(str(path), np.concatenate(rows, 0)[..., ::-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=CACHE, help="folder with sfm/, labels/, photos/")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--preview", type=Path)
    parser.add_argument("--head", default=str(CACHE / "ict-face"), help="the ICT head's folder ('' for none)")
    args = parser.parse_args()
    model = sfm.load(args.cache / "sfm")
    load = lambda fraction, head=args.head or None: RealFaces.from_folder(
        model, args.cache / "labels", args.cache / "photos", "val", sets=["real-faces"], original_fraction=fraction, head=head)
    profiled = load(0.0)
    if args.preview:
        preview(profiled, args.preview)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    result = {"commit": commit, "photos": profiled.count, "black_share_profiled": black_by_yaw(profiled, args.batches),
              "head": args.head, "black_share_as_taken": black_by_yaw(load(1.0), args.batches), "speed": speed(profiled)}
    if args.head:
        result["speed_without_head"] = speed(load(0.0, None))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
