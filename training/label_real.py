"""Labels for real photos: the Surrey Face Model fitted to MediaPipe's face mesh, one .npz per photo set.

    python -m training.label_real --data ../shared/data --out cache/labels       # both sets, train + val

Per photo: pad it (tight crops need room around the face), find the face with the runtime's own
detectors (facevox.faces), run MediaPipe's face mesh (478 points), keep the mesh face that matches
the detected box, fit the Surrey model to the points that have a Surrey vertex
(training/data/mediapipe_to_sfm.json), and keep the fit when its reprojection error is small.
Everything is stored in the original photo's pixel frame. cache/labels/SET.npz holds, for kept
photos: photo (file name), split (train/val), identity (63), expression (6), rotation (3×3), scale, translation
(2), error (pixels and per face size), box (the detector's face box), yaw/pitch/roll; and the
rejected files with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from facevox.faces import box_iou
from training import sfm
from training.correspondence import load_table
from training.fit import fit_landmarks
from training.splits import photos

PAD = {"real-faces": 0.3, "celeb-faces": 0.35}  # padding on every side, as a share of the photo's longer side
MIN_SIDE = 256  # small padded photos are enlarged to this (longer side) before detection
MAX_ERROR = 0.035  # reject fits whose RMS reprojection error exceeds this share of the face size


def prepare(image: np.ndarray, pad: float) -> tuple[np.ndarray, float, float]:
    """Pad (replicating the border) and enlarge a photo → (prepared, scale, offset), where a photo point p
    lies at p · scale + offset in the prepared image (pixel centres at integer coordinates)."""
    height, width = image.shape[:2]
    border = int(round(pad * max(height, width)))
    padded = cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_REPLICATE)
    scale = max(1.0, MIN_SIDE / max(padded.shape[:2]))
    if scale > 1.0:
        size = (int(round(padded.shape[1] * scale)), int(round(padded.shape[0] * scale)))
        padded = cv2.resize(padded, size, interpolation=cv2.INTER_CUBIC)
        scale = size[0] / (width + 2 * border)
    offset = (border + 0.5) * scale - 0.5
    return padded, scale, offset


def fit_face_mesh(model, point_ids: np.ndarray, vertex_ids: np.ndarray, points: np.ndarray):
    """The Surrey model fitted to (478, ≥2) MediaPipe points (photo pixels) through the table's
    (point_ids, vertex_ids) pairs (training.correspondence.load_table)."""
    targets = points[point_ids, :2]
    extent = np.ptp(targets, axis=0)
    face_size = float(np.sqrt(extent[0] * extent[1]))
    # ~6× as many points as the 68 landmarks, with correlated errors: scale the noise so the data
    # weigh against the shape priors about as 68 landmarks would.
    noise = 0.02 * face_size * np.sqrt(len(targets) / 68)
    return fit_landmarks(model, vertex_ids, targets, noise=noise)


class Labeller:
    """Detectors, face mesh, Surrey model and table, loaded once (per process)."""

    def __init__(self, model=None):
        from facevox.faces import default_detectors
        from training.mediapipe_points import FaceMeshPoints

        self.model = model or sfm.load()
        self.detectors = default_detectors()
        self.mesh_points = FaceMeshPoints(max_faces=2)
        self.point_ids, self.vertex_ids = load_table()

    def __call__(self, image: np.ndarray, pad: float = 0.3) -> dict:
        """Label one RGB photo: a dict of fitted parameters, or {'reason': ...} when it is rejected."""
        from facevox.faces import detect_faces

        prepared, scale, offset = prepare(image, pad)
        detections = detect_faces(prepared, self.detectors)
        if not detections:
            return {"reason": "no face detected"}
        box = (detections[0].box - offset) / scale
        faces = [(p[:, :2] - offset) / scale for p in self.mesh_points(prepared)]
        if not faces:
            return {"reason": "no face mesh"}
        overlaps = [box_iou(box, np.r_[f.min(0), f.max(0)]) for f in faces]
        best = int(np.argmax(overlaps))
        if overlaps[best] < 0.3:
            return {"reason": "face mesh does not match the detected face"}
        return self.fit(faces[best], box)

    def fit(self, points: np.ndarray, box: np.ndarray) -> dict:
        """Fit the Surrey model to (478, 2) MediaPipe points in photo pixels."""
        fit = fit_face_mesh(self.model, self.point_ids, self.vertex_ids, points)
        marks = fit.project(self.model)[self.model.landmarks, :2]
        size = float(np.sqrt(np.prod(marks.max(0) - marks.min(0))))
        yaw, pitch, roll = fit.pose
        label = dict(identity=fit.identity, expression=fit.expression, rotation=fit.rotation, scale=fit.scale,
                     translation=fit.translation, error=fit.error, relative_error=fit.error / size, box=np.asarray(box),
                     pose=np.array([yaw, pitch, roll]))
        if fit.error / size > MAX_ERROR:
            return {"reason": "fit error too large", **label}
        return label


_worker: Labeller | None = None


def _label_file(job: tuple[str, float]) -> dict:
    global _worker
    if _worker is None:
        _worker = Labeller()
    path, pad = job
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        return {"reason": "unreadable"}
    return _worker(image[:, :, ::-1].copy(), pad)


FIELDS = ("identity", "expression", "rotation", "scale", "translation", "error", "relative_error", "box", "pose")


def save_labels(path: Path, name: str, files: list[str], splits: list[str], results: list[dict]) -> None:
    """Write one set's labels: the kept photos' fields, and the rejected photos with their reasons."""
    kept = [i for i, r in enumerate(results) if "reason" not in r]
    rejected = [i for i, r in enumerate(results) if "reason" in r]
    arrays = {k: np.array([results[i][k] for i in kept], dtype=np.float32).reshape(len(kept), *np.shape(results[kept[0]][k]) if kept else (0,))
              for k in FIELDS}
    np.savez_compressed(
        path, set=name, photo=np.array([files[i] for i in kept], dtype=str), split=np.array([splits[i] for i in kept], dtype=str),
        **arrays, rejected_file=np.array([files[i] for i in rejected], dtype=str),
        rejected_reason=np.array([results[i]["reason"] for i in rejected], dtype=str),
    )


def label_set(name: str, folder: Path, out: Path, workers: int = 2, limit: int = 0) -> dict:
    files = [(f, split) for split in ("train", "val") for f in photos(name, folder, split)]
    if limit:
        files = files[:: max(1, len(files) // limit)][:limit]
    jobs = [(str(f), PAD[name]) for f, _ in files]
    started = time.time()
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_label_file, jobs, chunksize=8))
    else:
        results = [_label_file(j) for j in jobs]
    save_labels(out / f"{name}.npz", name, [f.name for f, _ in files], [split for _, split in files], results)
    kept = [i for i, r in enumerate(results) if "reason" not in r]
    rejected = [i for i, r in enumerate(results) if "reason" in r]
    summary = {"set": name, "photos": len(files), "kept": len(kept), "seconds": round(time.time() - started, 1)}
    for split in ("train", "val"):
        summary[f"kept_{split}"] = sum(files[i][1] == split for i in kept)
        summary[f"photos_{split}"] = sum(s == split for _, s in files)
    reasons: dict[str, int] = {}
    for i in rejected:
        reasons[results[i]["reason"]] = reasons.get(results[i]["reason"], 0) + 1
    summary["rejected"] = reasons
    return summary


def load_labels(path: Path, split: str | None = None) -> dict:
    """A labels file as a dict of arrays (optionally one split only)."""
    with np.load(path) as data:
        labels = {k: data[k] for k in data.files if not k.startswith("rejected")}
    if split is not None:
        keep = labels["split"] == split
        labels = {k: (v[keep] if v.ndim and len(v) == len(keep) else v) for k, v in labels.items()}
    return labels


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--sets", nargs="+", default=list(PAD))
    parser.add_argument("--out", default="cache/labels")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--limit", type=int, default=0, help="label only this many photos per set (a quick look)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for name in args.sets:
        summary = label_set(name, Path(args.data) / name, out, args.workers, args.limit)
        print(json.dumps(summary), flush=True)
        summaries.append(summary)
    (out / "summary.json").write_text(json.dumps(summaries, indent=1) + "\n")


if __name__ == "__main__":
    main()
