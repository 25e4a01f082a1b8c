"""The hierarchical model's CPU cost a face with realistic blocks, against the dense model (issue 18):

    PYTHONPATH=src:. python -m bench.hsp_cpu [--faces 8] [--scales 1,1.5,2] [--no-mirror] \\
        [--hsp-channels C] [--hsp-spatial L] [--out bench/results/hsp_cpu_oracle.json]

No trained hierarchical head exists, and an untrained one refines arbitrary blocks, so each level's
blocks are forced to the oracle's (`training.hsp.oracle_hierarchy`: the octants that hold the true
visible surface of that render, what a perfect head refines) through the runtime's own code path
(`HierarchicalModel.refine(blocks=...)`). A trained head refines some blocks besides: `--scales` also
times the oracle's blocks plus others up to 1.5× and 2× as many at each level (`widen`: the candidates
nearest a true block, among the children of the blocks already refined).

The model: `--hsp-model`, or by default `hsp-hg2-w192` made here in a temporary folder (`--hsp-channels`,
`--hsp-spatial` change its NetConfig), its backbone and dense head read from the shipped dense model and
its hierarchical head fresh (seed 0): the graphs and their cost are a trained model's, the numbers in
them are not. Faces: `bench.accuracy_synthetic`'s held-out renders. Each model in its own process
(`bench.hsp_timing`), on the same crops, with the same threads, the first crop a warm-up: CPU seconds a
face in all and by part (the trunk graph, each level's graph, the numpy between them, the surface with
its front depth), wall seconds, peak memory. The models run in turn, `--rounds` times (the machine's load
drifts): each figure is the median of its runs (`cpu_s_per_face_runs` lists them). The dense model also
runs without its mirror pass (`dense_no_mirror`); `--no-mirror` runs the hierarchical model without it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.accuracy_synthetic import DEFAULT_PHOTOS, SEED_BASE


def keys(origins: np.ndarray, grid: int) -> np.ndarray:
    return (origins[:, 0] * grid + origins[:, 1]) * grid + origins[:, 2]


def widen(truth: list[np.ndarray], grids: list[int], factor: float, block: int = 16, octant: int = 8) -> list[np.ndarray]:
    """Each level's blocks (origins (m, 3)): the true ones and, up to `factor` times as many, the candidates
    nearest a true block (Chebyshev distance between origins, in the level's voxels; ties in raster order).
    Candidates are what the runtime can refine: every octant of level 0 at level 1, else the 8 octants of
    each block chosen at the level above."""
    chosen, parents = [], None
    n0 = grids[0] // octant
    sub = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for level, true in enumerate(truth, start=1):
        if level == 1:
            candidates = block * np.stack(np.meshgrid(*[np.arange(n0)] * 3, indexing="ij"), -1).reshape(-1, 3)
        else:
            candidates = (2 * (parents[:, None] + octant * sub[None])).reshape(-1, 3)
        g = grids[level]
        is_true = np.isin(keys(candidates, g), keys(true, g))
        others = candidates[~is_true]
        extra = max(int(round(factor * len(true))) - int(is_true.sum()), 0)
        if extra and len(true) and len(others):
            distance = np.abs(others[:, None] - true[None]).max(-1).min(1)
            others = others[np.lexsort((keys(others, g), distance))]
        parents = np.concatenate([candidates[is_true], others[:extra]])
        chosen.append(parents)
    return chosen


def oracle_blocks(depth, mask, grids: list[int], size: int) -> list[list[np.ndarray]]:
    """Each face's true blocks at each level (`training.hsp.oracle_hierarchy`, visible surface)."""
    from training.hsp import HierarchyTargets, oracle_hierarchy

    targets = HierarchyTargets(depth, mask, grids, size)
    return [[level.origin for level in oracle_hierarchy(targets, i).levels] for i in range(len(depth))]


def untrained_model(folder: Path, dense_model: Path, **changes) -> Path:
    """hsp-hg2-w192 (with `changes` to its NetConfig) in `folder`: the dense model's weights, a fresh
    hierarchical head (seed 0)."""
    import dataclasses

    import torch

    from facevox.net import CONFIGS, build
    from facevox.torch_volume import from_onnx
    from training.export_onnx import export

    torch.manual_seed(0)
    net = build(dataclasses.replace(CONFIGS["hsp-hg2-w192"], **changes))
    from_onnx(net, dense_model, partial=True)
    path = folder / "hsp-hg2-w192.onnx"
    export(net.eval(), path, {"name": "hsp-hg2-w192", "training_steps": 0, "note": "untrained head (bench/hsp_cpu.py)"})
    return path


def timing(model: str, crops: Path, threads: int, blocks: Path | None = None, mirror: bool = True) -> dict:
    command = [sys.executable, "-m", "bench.hsp_timing", model, str(crops), str(threads)]
    command += (["--blocks", str(blocks)] if blocks else []) + ([] if mirror else ["--no-mirror"])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(runs: list[dict]) -> dict:
    """Timing rows of repeated runs → one: the median of each figure and part, and each part's share of the
    CPU time a face."""
    row = {key: float(np.median([run[key] for run in runs])) for key in ("wall_s_per_face", "cpu_s_per_face", "peak_rss_mb")}
    row["parts"] = {part: float(np.median([run["parts"][part] for run in runs])) for part in runs[0]["parts"]}
    row["shares"] = {name: seconds / row["cpu_s_per_face"] for name, seconds in row["parts"].items()}
    row["cpu_s_per_face_runs"] = [run["cpu_s_per_face"] for run in runs]
    return {**{k: v for k, v in runs[0].items() if k not in row}, **row}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=8, help="timed faces (one more is rendered, the warm-up)")
    parser.add_argument("--scales", default="1,1.5,2", help="blocks a level, as multiples of the oracle's")
    parser.add_argument("--dense-model", default=None, help="dense ONNX model (default: the shipped one)")
    parser.add_argument("--hsp-model", default=None, help="hierarchical model (default: an untrained one made here)")
    parser.add_argument("--hsp-channels", type=int, default=None, help="the untrained model's hsp_channels (default: the config's)")
    parser.add_argument("--hsp-spatial", type=int, default=None, help="the untrained model's hsp_spatial (default: the config's)")
    parser.add_argument("--no-mirror", action="store_true", help="the hierarchical model without the mirrored crop's pass")
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS), help="real-faces folder ('' = procedural backgrounds only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each model, in turn (medians reported)")
    parser.add_argument("--out", default="bench/results/hsp_cpu_oracle.json")
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    from facevox.volume import model_files
    from training import sfm
    from training.sources.synthetic import SyntheticFaces, load_photos
    from training.splits import real_faces

    start = time.time()
    torch.set_num_threads(args.threads)
    dense_path, _ = model_files(args.dense_model)
    photo_files = real_faces(Path(args.photos), "val") if args.photos else []
    source = SyntheticFaces(sfm.load(), load_photos(photo_files) if photo_files else None, device="cpu")
    batch = source.sample(args.faces + 1, SEED_BASE)
    crops = (batch.image.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    scales = [float(s) for s in args.scales.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        changes = {k: v for k, v in (("hsp_channels", args.hsp_channels), ("hsp_spatial", args.hsp_spatial)) if v is not None}
        hsp_path = Path(args.hsp_model) if args.hsp_model else untrained_model(folder, dense_path, **changes)
        hsp_path, info = model_files(hsp_path)
        grids, size = info["hierarchy"]["grids"], int(info["input_size"])
        truth = oracle_blocks(batch.depth, batch.mask, grids, size)
        head = {"channels": info["hierarchy"]["channels"], "windows": info["hierarchy"].get("windows")}  # none before the windows
        hsp = {}
        np.save(folder / "crops.npy", crops)
        for scale in scales:
            np.savez(folder / f"blocks{scale}.npz", **{f"face{i}_level{level}": origins for i, face in enumerate(truth)
                                                       for level, origins in enumerate(widen(face, grids, scale), start=1)})
        runs = {"dense": [], "dense_no_mirror": [], **{f"{scale:g}x": [] for scale in scales}}
        for _ in range(args.rounds):  # the models in turn, each round: the machine's load drifts
            runs["dense"].append(timing(str(dense_path), folder / "crops.npy", args.threads))
            for scale in scales:
                runs[f"{scale:g}x"].append(timing(str(hsp_path), folder / "crops.npy", args.threads, folder / f"blocks{scale}.npz",
                                                  mirror=not args.no_mirror))
                print(f"{scale:g}x: {runs[f'{scale:g}x'][-1]['cpu_s_per_face']:.3f} CPU s a face", file=sys.stderr, flush=True)
            runs["dense_no_mirror"].append(timing(str(dense_path), folder / "crops.npy", args.threads, mirror=False))
        hsp = {f"{scale:g}x": median(runs[f"{scale:g}x"]) for scale in scales}
    result = {
        "benchmark": "hsp_cpu",
        "settings": {"faces": args.faces, "seed": SEED_BASE, "threads": args.threads, "scales": scales, "rounds": args.rounds,
                     "dense_model": dense_path.name, "hsp_model": args.hsp_model or "hsp-hg2-w192, untrained head (made by the bench)",
                     "hsp_head": head, "hsp_mirror": not args.no_mirror, "hsp_grids": grids,
                     "blocks": "the oracle's (visible surface), widened by each scale",
                     "oracle_blocks_per_face": np.mean([[len(level) for level in face] for face in truth[1:]], axis=0).tolist(),
                     "cpu": platform.processor() or platform.machine(),
                     "versions": {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__}},
        "metrics": "CPU (process) seconds a face over --faces crops after a warm-up, medians over --rounds, each part's share; "
                   "see bench/hsp_cpu.py",
        "dense": median(runs["dense"]), "dense_no_mirror": median(runs["dense_no_mirror"]), "hsp": hsp,
    }
    result["settings"]["wall_time_s"] = round(time.time() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"dense": result["dense"]["cpu_s_per_face"], **{k: v["cpu_s_per_face"] for k, v in result["hsp"].items()}}))


if __name__ == "__main__":
    main()
