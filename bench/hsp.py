"""Dense against hierarchical (HSP) volume, one run on the same held-out renders (docs/hsp.md).

    PYTHONPATH=src:. FACEVOX_SFM=/work/shared/data/sfm \\
        python -m bench.hsp [--count 64] [--hsp-model hsp-hg2-w192] [--threshold T] [--out bench/results/hsp.json]

Faces: `bench.accuracy_synthetic`'s held-out renders (seed 2·10^9 + batch, clutter from the real-faces
'val' split), crops as uint8, both models with the mirror average as the product runs them.

Per face, for each model:
    iou_own      IoU of occupancy > 0.5 on the model's own grid: the dense model's 200 × 192 × 192
                 against `training.voxels.occupancy`'s rule; the hierarchical model's finest grid (384³ for
                 the 192 crop: the prior and every level's blocks composed, `Hierarchy.volume`) against the
                 same rule on the depth map bilinearly upsampled as its training targets are
                 (`training.hsp.HierarchyTargets`).
    iou_common   IoU on the common grid, the crop's pixels × depths 0–191 (the dense grid less its last 8
                 depths; the hierarchical volume composed on that level, finer blocks averaged down).
    dense_error  `bench.accuracy_synthetic`'s dense surface error (% of the interocular distance after
                 rigid ICP) of the front depth's height field on the crop's pixels; the hierarchical
                 model also on its finest lateral grid (dense_error_fine), and both for the product's
                 mesh (`facevox.mesh.surface_from_depth`: outline limited, islands dropped).
    nme          68-landmark NME.
    voxels       voxels evaluated: the dense volume's, or each level's (level 0 whole, then the refined
                 blocks' 16³ cores; the heads also compute a 2-voxel halo around each, `halo_voxels`).
Floors: `hsp_floor` is the hierarchical runtime's front depth from a perfect head (the targets' own
hierarchy, `training.hsp.oracle_hierarchy`: true boundary blocks, target occupancy), on the crop's pixels
and on the finest grid, with its blocks a face; `truth_floor` the dense error of the render's own depth
map (what the measuring costs).
CPU time and peak memory a face: each model in its own process (`--threads` threads), the network and the
surface (front depth, mesh) on `--timing-faces` of the crops, after one warm-up face; wall and CPU seconds
a face, and the process's peak resident memory.
--threshold: the hierarchical model's octant refinement threshold (default: its JSON's), in both parts.
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
import torch

from bench import metrics
from bench.accuracy_synthetic import DEFAULT_PHOTOS, SEED_BASE, depth_error
from facevox.landmarks import from_heatmaps
from facevox.mesh import front_depth, height_field, surface_from_depth
from facevox.volume import VolumeModel, model_files
from training.hsp import HierarchyTargets, oracle_hierarchy

VISIBILITY_TOLERANCE = 1.5


def fine_target(depth: np.ndarray, mask: np.ndarray, grid: int) -> np.ndarray:
    """(G, G, G) bool: the hierarchical model's finest target (occupancy > 0.5), built as in training."""
    targets = HierarchyTargets(torch.from_numpy(depth)[None].float(), torch.from_numpy(mask)[None], [grid], depth.shape[0])
    h = depth.shape[0] / grid
    centres = (np.arange(grid) + 0.5) * h - 0.5
    surface = np.where(targets.fine_mask[0].numpy(), targets.fine_depth[0].numpy(), np.inf)
    return centres[:, None, None] > surface[None]


def fine_height_field_error(points, depth, mask, scale: float, factor: int) -> float:
    """dense_error of a height field on a grid `factor` times finer than the crop's pixels."""
    surface = height_field(depth, mask)
    vertices = surface.vertices.copy()
    vertices[:, :2] = (vertices[:, :2] + 0.5) / factor - 0.5
    return metrics.dense_error(points, vertices, surface.triangles, scale)


def evaluate_face(batch, i, dense_out, tree_out, size: int, span: int) -> dict:
    depth, mask = batch.depth[i].numpy(), batch.mask[i].numpy()
    marks = batch.landmarks[i].numpy().astype(np.float64)
    scale = metrics.interocular(marks)
    vertices = batch.vertices[i].numpy().astype(np.float64)
    points = vertices[metrics.visible_vertices(vertices, depth, VISIBILITY_TOLERANCE)]
    row = {"yaw": float(batch.pose[i, 0])}

    volume = dense_out.volume
    row["dense"] = {
        "iou_own": metrics.volume_iou(volume > 0.5, metrics.occupied(depth, mask, volume.shape[0])),
        "iou_common": metrics.volume_iou(volume[:size] > 0.5, metrics.occupied(depth, mask, size)),
        "dense_error": depth_error(points, *front_depth(volume), scale),
        "dense_error_mesh": metrics.dense_error(points, *mesh_arrays(surface_from_depth(*front_depth(volume))), scale),
        "nme": metrics.nme(from_heatmaps(dense_out.heatmaps, dense_out.landmark_depth, size), marks),
        "voxels": int(volume.size),
    }

    tree = tree_out.hierarchy
    finest = tree.grids[-1]
    common = tree.grids.index(size)
    fine_depth, fine_mask = tree.fine_front_depth()
    row["hsp"] = {
        "iou_own": metrics.volume_iou(tree.volume(len(tree.grids) - 1) > 0.5, fine_target(depth, mask, finest)),
        "iou_common": metrics.volume_iou(tree.volume(common) > 0.5, metrics.occupied(depth, mask, size)),
        "dense_error": depth_error(points, *tree_out.front, scale),
        "dense_error_fine": fine_height_field_error(points, fine_depth, fine_mask, scale, finest // size),
        "dense_error_mesh": metrics.dense_error(points, *mesh_arrays(surface_from_depth(*tree_out.front)), scale),
        "nme": metrics.nme(from_heatmaps(tree_out.heatmaps, tree_out.landmark_depth, size), marks),
        "voxels": tree.voxels(),
        "blocks": [len(level.origin) for level in tree.levels],
        "halo_voxels": [len(level.origin) * span**3 for level in tree.levels],
    }
    oracle = oracle_hierarchy(HierarchyTargets(batch.depth[i : i + 1], batch.mask[i : i + 1], tree.grids, size), 0)
    row["hsp_floor"] = {
        "dense_error": depth_error(points, *oracle.front_depth(), scale),
        "dense_error_fine": fine_height_field_error(points, *oracle.fine_front_depth(), scale, finest // size),
        "blocks": [len(level.origin) for level in oracle.levels],
    }
    row["truth_floor"] = {"dense_error": depth_error(points, depth, mask, scale)}
    return row


def mesh_arrays(mesh):
    return mesh.vertices, mesh.triangles


def timing(model: str, crops: np.ndarray, threads: int, threshold: float | None = None) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "crops.npy"
        np.save(path, crops)
        extra = [] if threshold is None else ["--threshold", str(threshold)]
        done = subprocess.run([sys.executable, "-m", "bench.hsp_timing", model, str(path), str(threads), *extra],
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(rows: list[dict]) -> dict:
    out = {}
    for method in ("dense", "hsp", "hsp_floor", "truth_floor"):
        entry = {}
        for key, value in rows[0][method].items():
            values = np.array([r[method][key] for r in rows], dtype=float)
            entry[key] = values.mean(axis=0).tolist() if values.ndim > 1 else float(values.mean())
        out[method] = entry
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=64, help="faces (a multiple of --batch-size)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dense-model", default=None, help="dense ONNX model (default: the shipped one)")
    parser.add_argument("--hsp-model", default="hsp-hg2-w192", help="hierarchical model: a file or a shipped model's name")
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS), help="real-faces folder ('' = procedural backgrounds only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timing-faces", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=None, help="octant refinement threshold (default: the model's JSON)")
    parser.add_argument("--out", default="bench/results/hsp.json")
    args = parser.parse_args(argv)

    from facevox.hierarchy import HierarchicalModel
    from training import sfm
    from training.sources.synthetic import SyntheticFaces, load_photos
    from training.splits import real_faces

    start = time.time()
    torch.set_num_threads(args.threads)
    photo_files = real_faces(Path(args.photos), "val") if args.photos else []
    source = SyntheticFaces(sfm.load(), load_photos(photo_files) if photo_files else None, device="cpu")
    dense = VolumeModel(args.dense_model, threads=args.threads)
    hsp = HierarchicalModel(args.hsp_model, threads=args.threads, threshold=args.threshold)
    size = dense.input_size
    if hsp.input_size != size:
        parser.error("the two models take crops of different sizes")

    rows, kept = [], []
    for b in range(-(-args.count // args.batch_size)):
        batch = source.sample(args.batch_size, SEED_BASE + b)
        crops = (batch.image.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        kept.append(crops)
        dense_out, hsp_out = dense(crops), [hsp(crop)[0] for crop in crops]  # one face at a time, as the product runs it
        span = hsp.block + 2 * hsp.halo
        rows += [evaluate_face(batch, i, dense_out[i], hsp_out[i], size, span) for i in range(len(crops))]
        print(f"[{len(rows)}] {time.time() - start:.0f} s", file=sys.stderr, flush=True)

    crops = np.concatenate(kept)[: args.timing_faces + 1]
    import onnxruntime

    result = {
        "benchmark": "hsp",
        "settings": {"faces": len(rows), "seeds": [SEED_BASE, SEED_BASE + len(kept) - 1], "threads": args.threads,
                     "dense_model": dense.path.name, "hsp_model": hsp.path.name,
                     "hsp_training_steps": model_files(hsp.path)[1].get("training_steps"),
                     "hsp_grids": hsp.grids, "threshold": hsp.threshold,
                     "versions": {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__}},
        "metrics": "see bench/hsp.py docstring; dense_error and nme are fractions (0.02 = 2 %)",
        "results": summary(rows),
        "cpu": {"dense": timing(str(dense.path), crops, args.threads), "hsp": timing(str(hsp.path), crops, args.threads, args.threshold)},
    }
    result["settings"]["wall_time_s"] = round(time.time() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["results"], indent=1))
    print(json.dumps(result["cpu"], indent=1))


if __name__ == "__main__":
    main()
