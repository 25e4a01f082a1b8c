"""Accuracy on held-out real photos: landmarks against fitted MediaPipe meshes, flip consistency, coverage.

    PYTHONPATH=src:. FACEVOX_SFM=../shared/data/sfm python -m bench.accuracy_real \\
        [--model src/facevox/models/vrn-hg2-w192.onnx] [--labels cache/labels] [--data ../shared/data] \\
        [--limit N] [--out bench/results/accuracy_real.json]

Photos
    The 'val' split of each set (training/splits.py: real-faces by person, celeb-faces by file), all
    of them, labelled or not. Each photo is prepared as for labelling (training/label_real.prepare:
    the border replicated by 30 % (real-faces) / 35 % (celeb-faces) of the longer side on every side,
    enlarged to ≥ 256 px), because many are tight crops; results are mapped back to the photo's pixels.
    facevox runs as shipped: `facevox.Reconstructor(model)` (its detectors, crop rule, refine pass,
    mesh settings); the face used is the one whose box overlaps the reference face most (else the
    largest).

Metrics
    found        share of photos for which facevox returns a face with a non-empty mesh.
    nme          68-landmark error on labelled photos with |yaw| < 45° (yaw of the label's fit):
                 mean distance between facevox's 2D landmarks and the reference, divided by
                 sqrt(w·h) of the reference points' box. Reference: the label's fitted Surrey model
                 (training/label_real.py, fitted to MediaPipe's 478-point face mesh through
                 training/data/mediapipe_to_sfm.json), its 68 iBUG landmark vertices projected, hidden
                 ones included (facevox's own convention). Photos where facevox finds no face count
                 in `found`, not here.
    nme_inner    the same over the 51 inner points (brows, eyes, nose, mouth; iBUG 18–68).
    flip         flip consistency: facevox on the photo and on its mirror image; the second mesh is
                 mirrored back (x → w − 1 − x); the symmetric mean nearest-vertex distance between the
                 two meshes (surface vertices, one per crop pixel) divided by the outer
                 interocular distance |L37 − L46| (1-based iBUG) of facevox's own 3D landmarks on the
                 photo. 0 for a perfectly mirror-consistent reconstructor; it does not need labels, so
                 it runs on every photo where both reconstructions find the face.
    Each is reported per set and overall (mean, median, count); nme and flip also by |yaw| bin of the
    label (0–30, 30–45, 45–90) where a label exists.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree

from facevox.faces import box_iou
from training import sfm
from training.fit import project
from training.label_real import PAD, load_labels, prepare
from training.splits import photos

ROOT = Path(__file__).resolve().parents[1]
YAW_BINS = [(0, 30), (30, 45), (45, 90.01)]


def reference_landmarks(model, labels: dict, i: int) -> np.ndarray:
    shape = model.shape(labels["identity"][i].astype(np.float64), labels["expression"][i].astype(np.float64))
    placed = project(shape, labels["rotation"][i].astype(np.float64), float(labels["scale"][i]), labels["translation"][i].astype(np.float64))
    return placed[model.landmarks, :2]


def pick_face(faces, box):
    if not faces:
        return None
    if box is None:
        return faces[0]
    return max(faces, key=lambda f: box_iou(f.box, box))


def reconstruct(recon, image):
    from facevox.errors import NoFaceError

    try:
        return recon(image)
    except NoFaceError:
        return []


def flip_distance(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def summary(values) -> dict:
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if not len(values):
        return {"count": 0}
    return {"mean": round(float(values.mean()), 4), "median": round(float(np.median(values)), 4), "count": int(len(values))}


def run_set(name: str, folder: Path, labels_path: Path, recon, model, limit: int = 0) -> list[dict]:
    labels = load_labels(labels_path, "val") if labels_path.exists() else None
    index = {str(f): i for i, f in enumerate(labels["photo"])} if labels is not None else {}
    files = photos(name, folder, "val")
    if limit:
        files = files[:: max(1, len(files) // limit)][:limit]
    rows = []
    for path in files:
        photo = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
        image, scale, offset = prepare(photo, PAD[name])
        row = {"photo": path.name, "labelled": path.name in index}
        reference = None
        if path.name in index:
            i = index[path.name]
            reference = reference_landmarks(model, labels, i)
            row["yaw"] = float(labels["pose"][i][0])
        box = None if reference is None else np.r_[reference.min(0), reference.max(0)] * scale + offset
        face = pick_face(reconstruct(recon, image), box)
        row["found"] = bool(face is not None and len(face.mesh.vertices) > 0)
        if row["found"]:
            if reference is not None:
                points = (face.landmarks_2d - offset) / scale
                size = np.sqrt(np.prod(reference.max(0) - reference.min(0)))
                errors = np.linalg.norm(points - reference, axis=1) / size
                row["nme"], row["nme_inner"] = float(errors.mean()), float(errors[17:].mean())
            width = image.shape[1]
            mirrored_box = np.array([width - 1 - face.box[2], face.box[1], width - 1 - face.box[0], face.box[3]])
            other = pick_face(reconstruct(recon, np.ascontiguousarray(image[:, ::-1])), mirrored_box)
            if other is not None and len(other.mesh.vertices):
                back = other.mesh.vertices * [-1.0, 1.0, 1.0] + [width - 1, 0.0, 0.0]
                interocular = float(np.linalg.norm(face.landmarks_3d[36] - face.landmarks_3d[45]))
                row["flip"] = flip_distance(face.mesh.vertices, back) / interocular
        rows.append(row)
    return rows


def report(rows: list[dict]) -> dict:
    frontal = [r for r in rows if r.get("labelled") and abs(r["yaw"]) < 45]
    out = {
        "photos": len(rows),
        "labelled": sum(r["labelled"] for r in rows),
        "found": round(float(np.mean([r["found"] for r in rows])), 4) if rows else None,
        "nme": summary(r.get("nme") for r in frontal),
        "nme_inner": summary(r.get("nme_inner") for r in frontal),
        "flip": summary(r.get("flip") for r in rows),
        "by_yaw": {},
    }
    for low, high in YAW_BINS:
        part = [r for r in rows if r.get("labelled") and low <= abs(r["yaw"]) < high]
        key = f"{low}-{int(high)}"
        out["by_yaw"][key] = {"photos": len(part), "found": round(float(np.mean([r["found"] for r in part])), 4) if part else None,
                              "nme": summary(r.get("nme") for r in part), "flip": summary(r.get("flip") for r in part)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "src" / "facevox" / "models" / "vrn-hg2-w192.onnx"))
    parser.add_argument("--labels", default="cache/labels")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--sets", nargs="+", default=list(PAD))
    parser.add_argument("--limit", type=int, default=0, help="at most this many photos per set (0 = all)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--detectors", default="", help='face detectors as "a+b" (facevox.faces.DETECTORS; default: the installed defaults)')
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "accuracy_real.json"))
    args = parser.parse_args()

    import facevox

    from facevox.faces import detectors_by_name
    from facevox.volume import model_files

    convention = model_files(args.model)[1].get("landmark_convention", "contour")
    model = sfm.load(landmarks=convention)  # the labels' landmarks in the model's convention

    detectors = detectors_by_name(args.detectors) if args.detectors else None
    recon = facevox.Reconstructor(args.model, detectors=detectors, threads=args.threads or None)
    started = time.time()
    results = {"model": str(Path(args.model).name), "landmark_convention": convention, "detectors": [type(d).__name__ for d in recon.detectors], "sets": {}}
    all_rows = []
    for name in args.sets:
        rows = run_set(name, Path(args.data) / name, Path(args.labels) / f"{name}.npz", recon, model, args.limit)
        results["sets"][name] = report(rows)
        all_rows += rows
        print(name, json.dumps(results["sets"][name]), flush=True)
    results["overall"] = report(all_rows)
    results["seconds"] = round(time.time() - started, 1)
    results["about"] = ("Held-out real photos; nme against the label's fitted Surrey landmarks (from MediaPipe's face "
                        "mesh), |yaw| < 45°; flip = mirror-consistency distance / outer interocular; found = share of "
                        "photos with a face mesh. See bench/accuracy_real.py.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["overall"]))


if __name__ == "__main__":
    main()
