"""Where facevox's 68 points differ from AFLW2000-3D's 3D landmark convention, and how much a different
choice of Surrey landmark vertices would explain.

    PYTHONPATH=src:. python -m bench.landmark_convention [--points cache/aflw2000_points.npz] \\
        [--data ../shared/data/aflw2000-dev] [--out bench/results/landmark_convention.json]

Needs bench/accuracy_aflw2000.py's saved points (its --points file).

1. On aflw2000-dev (measure only): each system's signed offset of each of the 68 points from the true
   one, in the face's own image frame, averaged per |yaw| bin. Faces are mirrored (x → −x, iBUG points
   swapped) where needed so that every face turns the same way, its jaw half iBUG 10–17 facing the
   camera (the half whose true points lie further from the nose tip). Components, over sqrt(w·h) of
   the true box:
   inward   along the unit vector from the true point to the true points' centroid (> 0: the
            prediction lies nearer the face's centre);
   across   along the face's horizontal axis (true right-eye centre → left-eye centre);
   down     along the axis perpendicular to it, towards the chin.
2. On Surrey faces (synthetic: random identities and poses, the renders' ranges, no photo): the same
   offsets of today's landmark vertices (training.sfm.landmark_vertices) from each candidate convention's
   (training.sfm.LANDMARK_CONVENTIONS: "ict-jaw", ICT FaceKit's jaw landmarks carried onto the Surrey
   mean face; "contour-ict-heights", the jaw kept on the contour at those landmarks' heights;
   "ict-nose-bridge", ICT's iBUG 28 and 29), as if today's were the prediction and the candidate the
   truth. Where these match part 1, the convention explains facevox's offsets.
3. Re-mapped facevox on aflw2000-dev: facevox's 3D points moved by the per-point 3D offset (candidate −
   today's, in the model frame, averaged over the random Surrey identities of part 2, i.e. learned on
   synthetic faces only), turned and scaled by facevox's own pose (a similarity fit of the Surrey mean
   landmarks to its inner 51 points); NME per bin before and after. Nothing is fitted on aflw2000-dev.
4. facevox on held-out synthetic renders against their own targets (today's convention), the same
   table: what the network does where the convention is its own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.aflw import GROUPS_68, SYSTEMS, YAW_BINS, group_nme, mean_of_bins, point_errors, summary, yaw_bin
from bench.aflw21 import FLIP, INNER, similarity
from facevox.landmarks import MIRROR_68
from facevox.pose import rotation_matrix

ROOT = Path(__file__).resolve().parents[1]


def face_frame_offsets(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(68, 3) offsets (inward, across, down) of predicted from true 2D points, over sqrt(w·h) of the true box."""
    predicted, truth = np.asarray(predicted, float)[:, :2], np.asarray(truth, float)[:, :2]
    size = np.sqrt(np.prod(np.ptp(truth, axis=0)))
    across = truth[42:48].mean(0) - truth[36:42].mean(0)
    across /= np.linalg.norm(across)
    down = np.array([-across[1], across[0]])  # image y is down: (1, 0) → (0, 1)
    inward = truth.mean(0) - truth
    inward /= np.maximum(np.linalg.norm(inward, axis=1, keepdims=True), 1e-9)
    delta = predicted - truth
    return np.column_stack([(delta * inward).sum(1), delta @ across, delta @ down]) / size


def mirrored(points: np.ndarray) -> np.ndarray:
    """(…, 68, ≥2) points of the mirror image (x → −x, iBUG points swapped)."""
    out = np.asarray(points, float)[..., MIRROR_68, :].copy()
    out[..., 0] *= -1
    return out


def near_side_first(truth: np.ndarray) -> np.ndarray:
    """(faces,) bool: the face's jaw half iBUG 1–8 lies further from the nose tip across the image than
    10–17, i.e. that half faces the camera (for a turned face)."""
    spread = [np.abs(truth[:, part, 0] - truth[:, 30:31, 0]).mean(1) for part in (slice(0, 8), slice(9, 17))]
    return spread[0] > spread[1]


def offset_table(predicted: np.ndarray, truth: np.ndarray, yaws: np.ndarray) -> dict:
    """Per yaw bin: per-point mean offsets (inward, across, down) of the found faces, each face mirrored
    where needed so that its jaw half 10–17 is the one facing the camera (by the true points)."""
    flip = near_side_first(truth)
    predicted, truth = predicted.copy(), truth.copy()
    predicted[flip], truth[flip] = mirrored(predicted[flip]), mirrored(truth[flip])
    found = np.isfinite(predicted).all((1, 2))
    bins = np.array([yaw_bin(y) for y in yaws])
    out = {}
    for name in YAW_BINS:
        part = found & (bins == name)
        if not part.any():
            continue
        offsets = np.stack([face_frame_offsets(p, t) for p, t in zip(predicted[part], truth[part])])
        mean = offsets.mean(0)
        out[name] = {"faces": int(part.sum()), "inward": np.round(mean[:, 0], 4).tolist(),
                     "across": np.round(mean[:, 1], 4).tolist(), "down": np.round(mean[:, 2], 4).tolist()}
    return out


def synthetic_faces(model, count: int, seed: int = 0):
    """Random Surrey shapes (count, n, 3) and poses (yaw, pitch, roll) (count, 3) over the renders' ranges."""
    rng = np.random.default_rng(seed)
    identity = rng.normal(0, 1, (count, model.shape_basis.shape[-1])).clip(-2.5, 2.5)
    expression = rng.uniform(0, 0.5, (count, model.expression_basis.shape[-1])) * (rng.random((count, model.expression_basis.shape[-1])) < 0.3)
    shapes = np.stack([model.shape(i, e) for i, e in zip(identity, expression)])
    poses = np.column_stack([rng.uniform(-90, 90, count), rng.uniform(-20, 20, count), rng.uniform(-15, 15, count)])
    return shapes, poses


def project_points(points: np.ndarray, pose) -> np.ndarray:
    """Model-frame points → photo frame (x right, y down, z away), unit scale."""
    return (points @ rotation_matrix(*pose).T) * FLIP


def convention_offsets(model, today: np.ndarray, candidate: np.ndarray, count: int = 600) -> tuple[dict, np.ndarray]:
    """Part 2's table (today's vertices as the prediction, the candidate's as the truth) on random Surrey
    faces, and the mean 3D offset (68, 3) candidate − today in the model frame (mm)."""
    shapes, poses = synthetic_faces(model, count)
    predicted = np.stack([project_points(s[today], p) for s, p in zip(shapes, poses)])
    truth = np.stack([project_points(s[candidate], p) for s, p in zip(shapes, poses)])
    return offset_table(predicted, truth, poses[:, 0]), (shapes[:, candidate] - shapes[:, today]).mean(0)


def renders_table(model, count: int, batch_size: int = 16) -> dict:
    """Part 4: facevox's network on held-out synthetic renders (bench/accuracy_synthetic.py's faces: seeds
    from 2·10⁹, procedural backgrounds; volume and mirror pass as shipped) against the renders' own targets
    (today's convention): the same per-point offset table, so the network's own error can be told from
    the convention's."""
    import torch

    from bench.accuracy_synthetic import SEED_BASE
    from facevox.landmarks import from_heatmaps
    from facevox.volume import VolumeModel
    from training.sources.synthetic import SyntheticFaces

    source, net = SyntheticFaces(model, None, device="cpu"), VolumeModel()
    size = int(net.info["input_size"])
    predicted, truth, yaws = [], [], []
    for b in range(-(-count // batch_size)):
        batch = source.sample(batch_size, SEED_BASE + b)
        crops = (batch.image.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        outputs = [o for k in range(0, len(crops), 4) for o in net(crops[k : k + 4])]
        predicted += [from_heatmaps(o.heatmaps, o.landmark_depth, size) for o in outputs]
        truth += list(batch.landmarks.numpy().astype(np.float64))
        yaws += batch.pose[:, 0].tolist()
    return offset_table(np.stack(predicted), np.stack(truth), np.array(yaws))


def remap(points: np.ndarray, mean_landmarks: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(68, 3) photo-frame points moved by a model-frame offset (68, 3), turned and scaled by the pose
    of a similarity fit of mean_landmarks' inner points to theirs."""
    scale, rotation, _ = similarity(mean_landmarks[INNER], points[INNER] * FLIP)
    return points + (scale * offset @ rotation.T) * FLIP


def nme_report(errors: np.ndarray, yaws: np.ndarray) -> dict:
    bins = np.array([yaw_bin(y) for y in yaws])
    found = np.isfinite(errors).all(1)
    by_bin = {name: {"nme": summary(errors[found & (bins == name)].mean(1)), "groups": group_nme(errors[found & (bins == name)])}
              for name in YAW_BINS}
    return {"by_bin": by_bin, "mean_of_bins": mean_of_bins(by_bin)}


def figure(path: Path, model, candidates: dict, results: dict) -> None:
    """The Surrey mean face with each jaw convention, and the jaw points' offsets (down at |yaw| 0–30°,
    inward at 30–60° and 60–90°): each system − AFLW2000-3D (measured) beside today's − candidate
    (synthetic Surrey faces)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.4), gridspec_kw={"width_ratios": [0.9, 1.3, 1.3, 1.3]})
    mean, colours = model.mean, ["tab:red", "tab:purple", "tab:brown"]
    ax = axes[0]
    ax.scatter(mean[:, 0], mean[:, 1], s=0.3, c="0.8")
    ax.scatter(*mean[model.landmarks].T[:2], s=10, c="tab:blue", label="contour (today)")
    for (name, ids), colour in zip(candidates.items(), colours):
        changed = ids != model.landmarks
        ax.scatter(*mean[ids[changed]].T[:2], s=10, c=colour, label=name)
    ax.set_aspect("equal"), ax.set_xticks([]), ax.set_yticks([])
    ax.set_title("Surrey mean face: jaw conventions", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    jaw = np.arange(1, 18)
    for ax, (name, component) in zip(axes[1:], (("0-30", "down"), ("30-60", "inward"), ("60-90", "inward"))):
        for system, style in (("facevox", "-"), ("peer", ":"), ("mediapipe", "-.")):
            table = results["aflw2000"][system].get(name)
            if table:
                ax.plot(jaw, table[component][:17], style, marker="o", ms=3, label=f"{system} − AFLW2000-3D")
        for (candidate, tables), colour in zip(results["synthetic_today_vs"].items(), colours):
            if name in tables and np.any(candidates[candidate][:17] != model.landmarks[:17]):
                ax.plot(jaw, tables[name][component][:17], "--", c=colour, marker="s", ms=3, label=f"today − {candidate} (Surrey faces)")
        ax.axhline(0, c="0.6", lw=0.8)
        ax.set_title(f"jaw, |yaw| {name}°: {component} offset / face size", fontsize=9)
        ax.set_xticks(jaw)
        ax.set_xlabel("iBUG jaw point (10–17: the side facing the camera)", fontsize=8)
    axes[1].legend(fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default=str(ROOT / "cache" / "aflw2000_points.npz"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "aflw2000-dev"))
    parser.add_argument("--faces", type=int, default=600, help="random Surrey faces for parts 2 and 3")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "landmark_convention.json"))
    parser.add_argument("--renders", type=int, default=96, help="held-out synthetic renders for part 4 (0 = skip)")
    parser.add_argument("--figure", default=str(ROOT / "docs" / "landmarks.png"), help="'' = none")
    args = parser.parse_args()

    from training import sfm

    saved = np.load(args.points)
    with np.load(Path(args.data) / "labels.npz") as labels:
        index = {str(n): i for i, n in enumerate(labels["names"])}
        rows = [index[str(n)] for n in saved["names"]]
        truth = labels["points3d"][rows].astype(np.float64)
    yaws = saved["yaw"]
    results = {"photos": len(rows), "aflw2000": {s: offset_table(saved[s], truth, yaws) for s in SYSTEMS}}

    model = sfm.load()
    candidates = {name: sfm.load(landmarks=name).landmarks for name in sfm.LANDMARK_CONVENTIONS if name != "contour"}
    facevox = saved["facevox"]
    mean_landmarks = model.mean[model.landmarks]
    results["synthetic_today_vs"], results["offset_mm"] = {}, {}
    results["remapped"] = {"facevox": nme_report(np.stack([point_errors(p, t) for p, t in zip(facevox, truth)]), yaws)}
    for name, candidate in candidates.items():
        synthetic, offset = convention_offsets(model, model.landmarks, candidate, args.faces)
        results["synthetic_today_vs"][name], results["offset_mm"][name] = synthetic, np.round(offset, 2).tolist()
        moved = np.array([remap(p, mean_landmarks, offset) if np.isfinite(p).all() else p for p in facevox])
        results["remapped"][f"facevox moved to {name}"] = nme_report(np.stack([point_errors(p, t) for p, t in zip(moved, truth)]), yaws)
    if args.renders:
        results["renders_facevox_vs_targets"] = renders_table(model, args.renders)
    results["groups"] = {name: [part.start + 1, part.stop] for name, part in GROUPS_68.items()}
    results["about"] = "See bench/landmark_convention.py: offsets (inward, across, down) over sqrt(w*h) of the true box."
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    if args.figure:
        figure(Path(args.figure), model, candidates, results)
    for name, report in results["remapped"].items():
        print(name, report["mean_of_bins"], {b: report["by_bin"][b]["nme"].get("mean") for b in YAW_BINS})


if __name__ == "__main__":
    main()
