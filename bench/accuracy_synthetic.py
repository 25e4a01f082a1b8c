"""Accuracy on held-out synthetic faces: facevox's network against the classic landmark-fitting peer.

    PYTHONPATH=src:. FACEVOX_SFM=/work/shared/data/sfm \\
        python -m bench.accuracy_synthetic [--count 512] [--out bench/results/accuracy_synthetic.json]

Faces
    `training.sources.synthetic.SyntheticFaces` renders, batch b (b = 0, 1, …) of `--batch-size` faces
    drawn with seed 2·10^9 + b. Training batches use seeds < 10^9 and the in-training evaluation
    seeds from 10^9, so these faces are never seen in training. Background clutter comes from the
    held-out ('val') split of the real-faces photos (training uses the 'train' split). Yaw is uniform
    in [−90°, 90°], so the |yaw| bins 0–30 / 30–60 / 60–90 (60–90 includes 90) get about a third each;
    pitch is uniform in ±35°, roll in ±30°. Everything is in crop coordinates (x, y, k; one unit is
    one crop pixel, k the depth away from the camera); the ground truth is the batch's z-buffer
    `depth`, `mask`, the 68 `landmarks` (x, y, k; hidden ones are the 3D points projected) and the
    full mesh `vertices`.

Methods (same images)
    facevox   the shipped ONNX network (`facevox.volume.VolumeModel`; with `--device cuda`, the same
              weights on torch, `facevox.torch_volume.TorchVolumeModel`, in `--precision`, as
              `facevox batch --device` runs them) on the uint8 crop: volume,
              landmarks by `facevox.landmarks.from_heatmaps`, surface by `facevox.mesh.surface_mesh`
              (height field of the front depth, outline spikes limited, large pieces), as the
              product makes them.
    peer      the classic approach (eos / 300W-LP): the Surrey model fitted to the 68 landmarks that
              facevox's own network predicts (`training.fit.fit_landmarks`, scaled orthographic,
              identity + expression with priors, landmark vertices `model.landmarks`). Its mesh is
              placed in the crop (x, y from the fit; depth shifted so that the mean depth of its 68
              landmark vertices equals the mean of the network's predicted landmark depths) and
              rendered with `training.render.splat` + `close_mouth`, the renderer and depth
              convention of the targets → depth map and mask.
    oracle    the same fit to the ground-truth 2D landmarks, depth placed by the ground-truth
              landmark depths: an upper bound for methods that fit a model to 68 landmarks.

Metrics, per face; reported per |yaw| bin and overall as mean and median over faces
    iou          volumetric IoU of the predicted occupancy (facevox: volume > 0.5; peer / oracle: their
                 depth map voxelised by the targets' rule, `training.voxels.occupancy(...) > 0.5`)
                 against the target `occupancy(depth, mask, 200) > 0.5`, over the whole 200×192×192
                 grid, no alignment.
    iou_shift    the same IoU after the best constant depth shift, for every method (whole voxels in
                 ±24, then quarter voxels within ±1 of the best): removes the depth-placement ambiguity
                 of a single view and the peer's borrowed depth offset, so shapes are compared fairly.
                 depth_offset is that shift (how far the prediction lies behind the target, voxels).
    nme          68-landmark 2D error: mean point distance / sqrt(w·h) of the ground-truth landmarks'
                 2D box (all 68 points, hidden ones included). facevox: its heatmap landmarks; peer /
                 oracle: the projections of the fitted model's landmark vertices.
    dense_error  Points: the ground-truth mesh vertices visible in the render (the pixel of the rounded
                 (x, y) is covered and the vertex depth ≤ z-buffer + 1.5 px). Surface: every method's
                 front depth map as a height-field mesh, nothing else done to it (a vertex at each
                 covered pixel centre, two triangles per covered 2×2 block; `facevox.mesh.height_field`)
                 — facevox: the volume's first 0.5 crossing per pixel, linearly interpolated
                 (`facevox.mesh.front_depth`, within 0.09 voxel of the target depth on target
                 volumes); peer / oracle: their rendered depth map. The points are rigidly aligned
                 to the surface by trimmed ICP (rotation + translation, no scale; from the identity;
                 closest points on the triangles; point-to-plane with a small point-to-point term;
                 the 90 % closest pairs drive each step; `bench.metrics.icp`), then the mean
                 point-to-surface distance over ALL the visible points (none trimmed) is divided by
                 the outer interocular distance |L36 − L45| of the ground-truth landmarks in 3D
                 (0-based iBUG-68 indices). Visible points with no
                 reconstructed surface near them count with their full distance to its edge.
    dense_error_mesh (facevox only) the same, with facevox's product mesh as the surface
                 (`facevox.mesh.surface_mesh`: that height field with the outline's spikes limited
                 (`facevox.mesh.limit_outline`) and small islands dropped), i.e. what a user gets.
    Also recorded, on every `--floor-every`-th face, the "pipeline floor": both dense errors computed
    on the ground truth's own occupancy volume instead of a prediction (what the measuring procedure,
    respectively the product's meshing, costs with a perfect volume).

Outputs: the JSON summary (`--out`), a per-face CSV beside it, and a markdown table on stdout.
Deterministic for a given --count / --batch-size / --seed-base (wall time aside).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench import metrics
from facevox.landmarks import from_heatmaps
from facevox.mesh import front_depth, height_field, surface_mesh
from facevox.torch_volume import PRECISIONS, TorchVolumeModel
from facevox.volume import VolumeModel
from training import sfm
from training.fit import fit_landmarks
from training.render import splat
from training.sources.synthetic import SyntheticFaces, close_mouth, load_photos
from training.splits import real_faces
from training.voxels import occupancy

SEED_BASE = 2 * 10**9
BINS = {"0-30": (0.0, 30.0), "30-60": (30.0, 60.0), "60-90": (60.0, 90.0 + 1e-9)}
METHODS = ("facevox", "peer", "oracle")
TARGETS = {"iou": 0.85, "dense_error": 0.04, "nme": 0.04}  # issue 2: IoU ≥ 0.85, dense ≤ 4 % IOD, NME ≤ 4 %
VISIBILITY_TOLERANCE = 1.5
DEFAULT_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-faces"


def peer_meshes(model, points_2d: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """Fit the model to (68, 2) crop points; place the mesh so its landmarks' mean depth is `depths`' mean."""
    fit = fit_landmarks(model, model.landmarks, points_2d)
    vertices = fit.project(model)
    vertices[:, 2] += depths.mean() - vertices[model.landmarks, 2].mean()
    return vertices


def render_depth(vertices: np.ndarray, triangles: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(b, n, 3) crop-coordinate meshes → depth (b, s, s) (+inf off the face) and mask, as the targets are made."""
    v = torch.as_tensor(vertices, dtype=torch.float32)
    image, depth, mask = splat(v, torch.as_tensor(triangles), torch.zeros(v.shape[0], v.shape[1], 3), size)
    _, depth, mask = close_mouth(image, depth, mask)
    return depth.numpy(), mask.numpy()


def depth_error(points: np.ndarray, depth: np.ndarray, mask: np.ndarray, scale: float) -> float:
    """dense_error with a depth map's height field as the surface."""
    surface = height_field(depth, mask)
    return metrics.dense_error(points, surface.vertices, surface.triangles, scale)


def score_volume(predicted: np.ndarray, depth: np.ndarray, mask: np.ndarray) -> dict:
    iou = float(metrics.shifted_ious(predicted, depth, mask, [0.0])[0])
    best, offset = metrics.best_shift_iou(predicted, depth, mask)
    return {"iou": iou, "iou_shift": best, "depth_offset": offset}


def evaluate_batch(batch, outputs, model, size: int, volume_depth: int, floor: list[bool]) -> list[dict]:
    b = batch.image.shape[0]
    gt_depth, gt_mask = batch.depth.numpy(), batch.mask.numpy()
    gt_marks, gt_vertices, pose = batch.landmarks.numpy().astype(np.float64), batch.vertices.numpy().astype(np.float64), batch.pose.numpy()
    predicted_marks = [from_heatmaps(o.heatmaps, o.landmark_depth, size) for o in outputs]

    peers = [peer_meshes(model, predicted_marks[i][:, :2], predicted_marks[i][:, 2]) for i in range(b)]
    oracles = [peer_meshes(model, gt_marks[i][:, :2], gt_marks[i][:, 2]) for i in range(b)]
    fitted = np.stack(peers + oracles)
    fitted_depth, fitted_mask = render_depth(fitted, model.triangles, size)

    rows = []
    for i in range(b):
        depth, mask = gt_depth[i], gt_mask[i]
        scale = metrics.interocular(gt_marks[i])
        visible = metrics.visible_vertices(gt_vertices[i], depth, VISIBILITY_TOLERANCE)
        points = gt_vertices[i][visible]
        row = {"yaw": float(pose[i, 0]), "pitch": float(pose[i, 1]), "roll": float(pose[i, 2]),
               "interocular": scale, "visible_vertices": int(visible.sum())}

        volume = outputs[i].volume
        result = score_volume(volume > 0.5, depth, mask)
        result["nme"] = metrics.nme(predicted_marks[i], gt_marks[i])
        result["dense_error"] = depth_error(points, *front_depth(volume), scale)
        product = surface_mesh(volume)
        result["dense_error_mesh"] = metrics.dense_error(points, product.vertices, product.triangles, scale)
        row["facevox"] = result

        for name, j in (("peer", i), ("oracle", b + i)):
            vertices, fdepth, fmask = fitted[j], fitted_depth[j], fitted_mask[j]
            result = score_volume(metrics.occupied(fdepth, fmask, volume_depth), depth, mask)
            result["nme"] = metrics.nme(vertices[model.landmarks], gt_marks[i])
            result["dense_error"] = depth_error(points, fdepth, np.isfinite(fdepth), scale)
            row[name] = result

        if floor[i]:  # the same measures on the ground truth's own volume: what the procedure itself costs
            truth = occupancy(batch.depth[i : i + 1], batch.mask[i : i + 1], volume_depth)[0].numpy()
            row["floor_dense_error"] = depth_error(points, *front_depth(truth), scale)
            mesh = surface_mesh(truth)
            row["floor_dense_error_mesh"] = metrics.dense_error(points, mesh.vertices, mesh.triangles, scale)
        rows.append(row)
    return rows


def yaw_bin(yaw: float) -> str:
    for name, (low, high) in BINS.items():
        if low <= abs(yaw) < high:
            return name
    raise ValueError(yaw)


def stats(values) -> dict:
    values = np.asarray(values, float)
    finite = values[np.isfinite(values)]
    out = {"mean": float(finite.mean()) if len(finite) else None, "median": float(np.median(finite)) if len(finite) else None}
    if len(finite) < len(values):
        out["failures"] = int(len(values) - len(finite))
    return out


def summarise(rows: list[dict]) -> tuple[dict, dict]:
    groups = {name: [r for r in rows if yaw_bin(r["yaw"]) == name] for name in BINS}
    groups["all"] = rows
    summary = {}
    for method in METHODS:
        summary[method] = {}
        for group, members in groups.items():
            entry = {"count": len(members)}
            for metric in rows[0][method]:
                entry[metric] = stats([r[method][metric] for r in members])
            entry["meets_targets"] = {
                "iou": entry["iou"]["mean"] >= TARGETS["iou"],
                "nme": entry["nme"]["mean"] <= TARGETS["nme"],
                "dense_error": entry["dense_error"]["mean"] <= TARGETS["dense_error"],
            }
            summary[method][group] = entry
    floor = {}
    for group, members in groups.items():
        chosen = [r for r in members if "floor_dense_error" in r]
        floor[group] = {"count": len(chosen), "dense_error": stats([r["floor_dense_error"] for r in chosen]),
                        "dense_error_mesh": stats([r["floor_dense_error_mesh"] for r in chosen])}
    return summary, floor


def percent(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def table(summary: dict, floor: dict) -> str:
    lines = [
        "| method | \\|yaw\\| | faces | IoU | IoU, best depth shift | NME % | dense error % IOD (mean) | dense error % IOD (median) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method in METHODS:
        for group in (*BINS, "all"):
            e = summary[method][group]
            lines.append(
                f"| {method} | {group} | {e['count']} | {e['iou']['mean']:.3f} | {e['iou_shift']['mean']:.3f} | "
                f"{percent(e['nme']['mean'])} | {percent(e['dense_error']['mean'])} | {percent(e['dense_error']['median'])} |"
            )
    lines += [
        "",
        "| \\|yaw\\| | facevox surface_mesh: dense error % IOD (mean / median) | ground truth volume, front depth: floor % (faces) | ground truth volume, surface_mesh: floor % |",
        "| --- | ---: | ---: | ---: |",
    ]
    for group in (*BINS, "all"):
        e, f = summary["facevox"][group]["dense_error_mesh"], floor[group]
        lines.append(
            f"| {group} | {percent(e['mean'])} / {percent(e['median'])} | {percent(f['dense_error']['mean'])} ({f['count']}) | "
            f"{percent(f['dense_error_mesh']['mean'])} |"
        )
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    pose = ["yaw", "pitch", "roll", "interocular", "visible_vertices"]
    measures = [(m, k) for m in METHODS for k in rows[0][m]]
    extra = ["floor_dense_error", "floor_dense_error_mesh"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["batch_seed", "index", *pose, *(f"{m}_{k}" for m, k in measures), *extra])
        for r in rows:
            values = [r["batch_seed"], r["index"], *(r[k] for k in pose), *(r[m][k] for m, k in measures), *(r.get(k, "") for k in extra)]
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in values])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=512, help="faces (a multiple of --batch-size)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed-base", type=int, default=SEED_BASE)
    parser.add_argument("--model", default=None, help="ONNX file (default: the shipped model)")
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS), help="real-faces folder ('' = procedural backgrounds only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu: the ONNX model on onnxruntime, as shipped; else a torch "
                        "device (cuda) for facevox.torch_volume.TorchVolumeModel, as `facevox batch --device` runs it")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="the torch model's number format")
    parser.add_argument("--floor-every", type=int, default=8, help="pipeline floor on every N-th face (0 = never)")
    parser.add_argument("--out", default="bench/results/accuracy_synthetic.json")
    args = parser.parse_args(argv)
    if args.seed_base < SEED_BASE:
        parser.error(f"--seed-base below {SEED_BASE} may overlap training or in-training evaluation seeds")

    start = time.time()
    torch.set_num_threads(args.threads)
    if args.device == "cpu":
        net, network = VolumeModel(args.model, threads=args.threads), "onnxruntime on the CPU"
    else:
        net = TorchVolumeModel(args.model, args.device, args.precision)
        network = f"torch on {torch.cuda.get_device_name(net.device) if net.device.type == 'cuda' else args.device}, {args.precision}"
    convention = net.info.get("landmark_convention", "contour")
    model = sfm.load(landmarks=convention)  # the targets in the model's convention
    photo_files = real_faces(Path(args.photos), "val") if args.photos else []
    source = SyntheticFaces(model, load_photos(photo_files) if photo_files else None, device="cpu")
    size, volume_depth = int(net.info["input_size"]), int(net.info["volume_depth"])

    rows, batches = [], -(-args.count // args.batch_size)
    for b in range(batches):
        seed = args.seed_base + b
        batch = source.sample(args.batch_size, seed)
        crops = (batch.image.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        outputs = [o for k in range(0, len(crops), 4) for o in net(crops[k : k + 4])]
        floor = [args.floor_every > 0 and (b * args.batch_size + i) % args.floor_every == 0 for i in range(len(crops))]
        for i, row in enumerate(evaluate_batch(batch, outputs, model, size, volume_depth, floor)):
            rows.append({"batch_seed": seed, "index": i, **row})
        done = len(rows)
        print(f"[{done}/{batches * args.batch_size}] {time.time() - start:.0f} s", file=sys.stderr, flush=True)

    summary, floor = summarise(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import onnxruntime
    import skimage

    result = {
        "benchmark": "accuracy_synthetic",
        "settings": {
            "count": len(rows),
            "batch_size": args.batch_size,
            "seeds": {"first": args.seed_base, "last": args.seed_base + batches - 1,
                      "rule": "batch b uses SyntheticFaces.sample(batch_size, seed_base + b)"},
            "yaw_bins_degrees": {k: [v[0], min(v[1], 90.0)] for k, v in BINS.items()},
            "background_photos": f"real-faces 'val' split ({len(photo_files)} photos)" if photo_files else "procedural only",
            "model_file": net.path.name,
            "network": network,
            "model_training_steps": net.info.get("training_steps"), "landmark_convention": convention,
            "visibility_tolerance_px": VISIBILITY_TOLERANCE,
            "best_shift_search": "whole voxels in [-24, 24], then 0.25 steps within ±1 of the best",
            "targets": TARGETS,
            "threads": args.threads,
            "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                         "onnxruntime": onnxruntime.__version__, "scikit-image": skimage.__version__},
            "wall_time_s": round(time.time() - start, 1),
        },
        "metrics": "see bench/accuracy_synthetic.py docstring; nme and dense_error are fractions (0.04 = 4 %)",
        "results": summary,
        "pipeline_floor": floor,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    write_csv(out.with_name(out.stem + "_faces.csv"), rows)
    markdown = table(summary, floor)
    out.with_suffix(".md").write_text(markdown + "\n")
    print(markdown)
    print(f"\n{len(rows)} faces, {result['settings']['wall_time_s']} s; written {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
