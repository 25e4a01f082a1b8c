"""The fitted ICT head (`facevox.head`) against known shapes, its stability, its landmarks and its speed.

    PYTHONPATH=src:. FACEVOX_SFM=/work/shared/data/sfm python -m bench.head_fit \\
        [--ict 96] [--surrey 96] [--identities 6 --renders 8] [--aflw 500] [--out bench/results/head_fit.json]

Renders (crop coordinates, as `bench/accuracy_synthetic.py`: x, y, k in crop pixels; shaded, composed
over hair, neck, clothes and clutter, degraded, by `training.sources.synthetic.SyntheticFaces.render`)
    ict      random ICT heads: identity ~ N(0, 0.8²) on all 100 modes (clipped ±2.5), 0–3 ARKit
             expressions at U(0.1, 0.8), yaw U(±90°), pitch U(±30°), roll U(±20°); the narrow face
             (ICT vertices 0–6705) and the eyeballs are rendered. Seeds 3·10⁹ + i.
    surrey   `SyntheticFaces.sample` of the Surrey Face Model, the faces of accuracy_synthetic
             (seeds 2·10⁹ + b, batches of 16).
The network (`facevox.volume.VolumeModel`, the shipped ONNX, mirror averaging as the product runs it)
sees the uint8 crop; its landmarks and surface (`facevox.mesh.surface_from_depth`, the product's
mesh) feed `facevox.head.fit_surface`, exactly what `fit_head` does with a Face.

Errors, over the outer eye-corner distance |L36 − L45| of the true 3D landmarks, per |yaw| bin
    head_vertex_error      (ICT only) mean distance of the fitted head's narrow-face vertices to the
                           same true vertices, after the best rigid motion (Kabsch) between the two:
                           the whole face, seen or hidden.
    head_dense_error       true visible vertices → fitted head mesh, `bench.metrics.dense_error`
                           (rigid trimmed ICP, then mean point-to-surface distance).
    surface_dense_error    the same for facevox's volumetric surface (the product's height field).
    head_dense_error_all   (Surrey) every true face vertex, seen or hidden → fitted head mesh.
    nme_head, nme_network  68-point NME (2D, over sqrt(w·h) of the true box) of the head's landmark
                           vertices and of the network's own landmarks.
Spread: `--identities` ICT identities, each rendered `--renders` times under random pose and
expression; each fit's identity-only shape (model millimetres, expression at 0) is rigidly aligned
to the mean of its identity's fits; per vertex, the RMS distance to that mean; mean over the narrow face.
Fit time: `fit_surface` per face, wall clock and process CPU time, on this machine as loaded.
AFLW2000-dev (measure only): `facevox.Reconstructor` on each photo, the face nearest the true
landmarks' box, the head fitted; NME of the head's landmark vertices and of the network's landmarks
against the 68 true points, per |yaw| bin 0–30 / 30–60 / 60–90 and the mean of the bins.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bench import metrics
from facevox import head
from facevox.mesh import surface_from_depth

BINS = {"0-30": (0.0, 30.0), "30-60": (30.0, 60.0), "60-90": (60.0, 90.0 + 1e-9)}
NARROW_FACE = 6706
ICT_SEED_BASE = 3 * 10**9
SURREY_SEED_BASE = 2 * 10**9
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def yaw_bin(yaw: float) -> str:
    return next(name for name, (low, high) in BINS.items() if low <= abs(yaw) < high)


def kabsch_error(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Distances between corresponding points after the best rigid motion of source onto target."""
    scale, rotation, translation = head.similarity(source, target, np.ones(len(source)))
    moved = (source - source.mean(0)) @ rotation.T + target.mean(0)  # rotation and translation only
    return np.linalg.norm(moved - target, axis=1)


def ict_render_model(model: head.HeadModel):
    """The narrow face and the eyeballs of the mean ICT head as a Surrey-like model for SyntheticFaces."""
    keep = (model.vertex_source < NARROW_FACE)
    keep[model.regions["eyes"]] = True
    triangles = model.triangles[keep[model.triangles].all(1)]
    ids = np.flatnonzero(keep)
    remap = np.full(len(keep), -1)
    remap[ids] = np.arange(len(ids))
    mean = model.shape(np.zeros(len(model.identity)), np.zeros(len(model.expression))).astype(np.float64)
    return ids, SimpleNamespace(
        mean=mean[ids], shape_basis=np.zeros((len(ids), 3, 1), np.float32), expression_basis=np.zeros((len(ids), 3, 1), np.float32),
        triangles=remap[triangles], landmarks=remap[model.landmarks68])


class Runner:
    """The network and the fit on rendered crops."""

    def __init__(self, threads: int):
        from facevox.volume import VolumeModel

        self.net = VolumeModel(threads=threads)
        self.size = int(self.net.info["input_size"])
        self.model = head.load_model()
        self.fit_times: list[tuple[float, float]] = []

    def __call__(self, crops: np.ndarray):
        """Per crop: network landmarks (68, 3), the product's surface mesh, the fit, the fitted head (crop frame)."""
        results = []
        for output in (o for k in range(0, len(crops), 4) for o in self.net(crops[k : k + 4])):
            landmarks = output.landmarks(self.size)
            surface = surface_from_depth(*output.front_depth())
            depth = head.depth_grid(surface.vertices)
            wall, cpu = time.perf_counter(), time.process_time()
            fit = head.fit_surface(self.model, landmarks, depth)
            self.fit_times.append((time.perf_counter() - wall, time.process_time() - cpu))
            vertices = fit.place(self.model.shape(fit.identity, fit.expression).astype(np.float64))
            results.append((landmarks, surface, fit, vertices))
        return results


def render_ict(source, model, ids, count: int, seed: int, identity=None, rng_pose=None):
    """`count` ICT faces from one seed: (crops uint8, truth vertices of `ids` in crop frame, true landmarks, pose, identity, expression)."""
    import torch

    rng = np.random.default_rng(seed)
    k, e = len(model.identity), len(model.expression)
    identities = np.clip(rng.normal(0, 0.8, (count, k)), -2.5, 2.5) if identity is None else np.repeat(identity[None], count, 0)
    expressions = np.zeros((count, e))
    for i in range(count):
        active = rng.choice(e, rng.integers(0, 4), replace=False)
        expressions[i, active] = rng.uniform(0.1, 0.8, len(active))
    shapes = np.stack([model.shape(identities[i], expressions[i])[ids] for i in range(count)])
    yaw, pitch, roll = rng.uniform(-90, 90, count), rng.uniform(-30, 30, count), rng.uniform(-20, 20, count)
    g = torch.Generator().manual_seed(seed)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)
    batch = source.render(t(shapes), t(yaw), t(pitch), t(roll), g)
    crops = (batch.image.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    return crops, batch, np.c_[yaw, pitch, roll], identities, expressions


def run_ict(runner: Runner, count: int, threads: int, batch_size: int = 8) -> list[dict]:
    from training.sources.synthetic import SyntheticFaces

    model = runner.model
    ids, render_model = ict_render_model(model)
    source = SyntheticFaces(render_model, None, device="cpu")
    face_ids = np.flatnonzero(model.vertex_source[ids] < NARROW_FACE)  # rows of the render's vertices
    rows = []
    for b in range(-(-count // batch_size)):
        crops, batch, pose, _, _ = render_ict(source, model, ids, batch_size, ICT_SEED_BASE + b)
        for i, (landmarks, surface, fit, vertices) in enumerate(runner(crops)):
            truth = batch.vertices[i].numpy().astype(np.float64)
            marks = batch.landmarks[i].numpy().astype(np.float64)
            scale = metrics.interocular(marks)
            visible = metrics.visible_vertices(truth, batch.depth[i].numpy(), 1.5)
            points = truth[visible & (model.vertex_source[ids] < NARROW_FACE)]
            rows.append({
                "yaw": float(pose[i, 0]),
                "head_vertex_error": float(kabsch_error(vertices[ids[face_ids]], truth[face_ids]).mean() / scale),
                "head_dense_error": metrics.dense_error(points, vertices, model.triangles, scale),
                "surface_dense_error": metrics.dense_error(points, surface.vertices, surface.triangles, scale),
                "nme_head": metrics.nme(vertices[model.landmarks68], marks),
                "nme_network": metrics.nme(landmarks, marks),
            })
        print(f"ict {len(rows)}/{count}", file=sys.stderr, flush=True)
    return rows[:count]


def run_surrey(runner: Runner, count: int, batch_size: int = 16) -> list[dict]:
    import torch

    from training import sfm
    from training.sources.synthetic import SyntheticFaces, load_photos
    from training.splits import real_faces

    surrey = sfm.load()
    photos = real_faces(DATA / "real-faces", "val") if (DATA / "real-faces").exists() else []
    source = SyntheticFaces(surrey, load_photos(photos) if photos else None, device="cpu")
    model = runner.model
    rows = []
    for b in range(-(-count // batch_size)):
        batch = source.sample(batch_size, SURREY_SEED_BASE + b)
        crops = (batch.image.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        for i, (landmarks, surface, fit, vertices) in enumerate(runner(crops)):
            truth = batch.vertices[i].numpy().astype(np.float64)
            marks = batch.landmarks[i].numpy().astype(np.float64)
            scale = metrics.interocular(marks)
            points = truth[metrics.visible_vertices(truth, batch.depth[i].numpy(), 1.5)]
            rows.append({
                "yaw": float(batch.pose[i, 0]),
                "head_dense_error": metrics.dense_error(points, vertices, model.triangles, scale),
                "surface_dense_error": metrics.dense_error(points, surface.vertices, surface.triangles, scale),
                "head_dense_error_all": metrics.dense_error(truth, vertices, model.triangles, scale),
                "nme_head": metrics.nme(vertices[model.landmarks68], marks),
                "nme_network": metrics.nme(landmarks, marks),
            })
        print(f"surrey {len(rows)}/{count}", file=sys.stderr, flush=True)
    return rows[:count]


def run_spread(runner: Runner, identities: int, renders: int) -> dict:
    from training.sources.synthetic import SyntheticFaces

    model = runner.model
    ids, render_model = ict_render_model(model)
    source = SyntheticFaces(render_model, None, device="cpu")
    face = model.vertex_source < NARROW_FACE
    zero_expression = np.zeros(len(model.expression))
    spreads, truth_errors = [], []
    for n in range(identities):
        rng = np.random.default_rng(ICT_SEED_BASE - 1 - n)
        identity = np.clip(rng.normal(0, 0.8, len(model.identity)), -2.5, 2.5)
        crops, batch, pose, _, _ = render_ict(source, model, ids, renders, ICT_SEED_BASE - 1000 - n, identity=identity)
        shapes = np.stack([model.shape(fit.identity, zero_expression)[face].astype(np.float64) for _, _, fit, _ in runner(crops)])
        mean = shapes.mean(0)
        for _ in range(3):  # align each to the mean, then the mean to the aligned shapes
            aligned = []
            for s in shapes:
                _, rotation, _ = head.similarity(s, mean, np.ones(len(s)))
                aligned.append((s - s.mean(0)) @ rotation.T + mean.mean(0))
            shapes, mean = np.stack(aligned), np.stack(aligned).mean(0)
        spreads.append(np.sqrt(((shapes - mean) ** 2).sum(2).mean(0)))  # per vertex, mm
        truth = model.shape(identity, zero_expression)[face].astype(np.float64)
        truth_errors.append(kabsch_error(mean, truth).mean())
        print(f"spread identity {n + 1}/{identities}", file=sys.stderr, flush=True)
    spreads = np.stack(spreads)
    return {"identities": identities, "renders_each": renders,
            "vertex_spread_mm": {"mean": float(spreads.mean()), "median": float(np.median(spreads)),
                                 "p95": float(np.percentile(spreads, 95))},
            "mean_fit_to_truth_mm": float(np.mean(truth_errors))}


def run_aflw(count: int, threads: int) -> list[dict]:
    import facevox
    from facevox.image import load_image
    from facevox.mesh import points_to_photo

    folder = DATA / "aflw2000-dev"
    labels = np.load(folder / "labels.npz")
    recon = facevox.Reconstructor(threads=threads)
    model = head.load_model()
    rows = []
    for i, name in enumerate(labels["names"][:count]):
        truth = labels["points3d"][i][:, :2].astype(np.float64)
        try:
            faces = recon(load_image(folder / "images" / str(name)))
        except facevox.NoFaceError:
            rows.append({"yaw": float(labels["pitch_yaw_roll"][i][1]), "found": False})
            continue
        centre = (truth.min(0) + truth.max(0)) / 2
        face = min(faces, key=lambda f: np.linalg.norm(f.landmarks_2d.mean(0) - centre))
        matrix = face.extras["crop_matrix"]
        landmarks, depth = head.crop_frame_inputs(face, matrix)
        fit = head.fit_surface(model, landmarks, depth)
        marks = points_to_photo(fit.place(model.shape(fit.identity, fit.expression)[model.landmarks68].astype(np.float64)), matrix)
        rows.append({"yaw": float(labels["pitch_yaw_roll"][i][1]), "found": True,
                     "nme_head": metrics.nme(marks, truth), "nme_network": metrics.nme(face.landmarks_2d, truth)})
        if (i + 1) % 50 == 0:
            print(f"aflw {i + 1}/{count}", file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict], keys) -> dict:
    out = {}
    for group in (*BINS, "all"):
        members = rows if group == "all" else [r for r in rows if yaw_bin(r["yaw"]) == group]
        entry = {"count": len(members)}
        for key in keys:
            values = np.array([r[key] for r in members if key in r], float)
            values = values[np.isfinite(values)]
            entry[key] = {"mean": float(values.mean()), "median": float(np.median(values))} if len(values) else None
        out[group] = entry
    for key in keys:  # the mean of the three bins (the field's usual AFLW2000 figure)
        bins = [out[b][key]["mean"] for b in BINS if out[b][key]]
        out.setdefault("mean_of_bins", {})[key] = float(np.mean(bins)) if len(bins) == len(BINS) else None
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ict", type=int, default=96)
    parser.add_argument("--surrey", type=int, default=96)
    parser.add_argument("--identities", type=int, default=6)
    parser.add_argument("--renders", type=int, default=8)
    parser.add_argument("--aflw", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/head_fit.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    start = time.time()
    runner = Runner(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "head_fit", "metrics": "see bench/head_fit.py docstring; errors are fractions of the outer interocular distance"}

    def save():  # after every part, so a long run leaves what it has measured
        times = np.array(runner.fit_times) * 1000
        if len(times):
            result["fit_time_ms"] = {"faces": len(times), "wall_median": float(np.median(times[:, 0])), "wall_p90": float(np.percentile(times[:, 0], 90)),
                                     "cpu_median": float(np.median(times[:, 1])), "cpu_p90": float(np.percentile(times[:, 1], 90))}
        result["settings"] = {
            "ict": args.ict, "surrey": args.surrey, "identities": args.identities, "renders": args.renders, "aflw": args.aflw,
            "threads": args.threads, "cpu_count": os.cpu_count(), "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "load_average": os.getloadavg(), "python": platform.python_version(), "numpy": np.__version__,
            "wall_time_s": round(time.time() - start, 1),
        }
        out.write_text(json.dumps(result, indent=1) + "\n")

    if args.ict:
        result["ict"] = summarise(run_ict(runner, args.ict, args.threads), ["head_vertex_error", "head_dense_error", "surface_dense_error", "nme_head", "nme_network"])
        save()
    if args.surrey:
        result["surrey"] = summarise(run_surrey(runner, args.surrey), ["head_dense_error", "surface_dense_error", "head_dense_error_all", "nme_head", "nme_network"])
        save()
    if args.identities:
        result["spread"] = run_spread(runner, args.identities, args.renders)
        save()
    if args.aflw:
        rows = run_aflw(args.aflw, args.threads)
        found = [r for r in rows if r["found"]]
        result["aflw2000_dev"] = {"photos": len(rows), "faces_found": len(found), **summarise(found, ["nme_head", "nme_network"])}
    save()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
