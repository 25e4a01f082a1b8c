"""68-point accuracy on real photos with 3D-convention landmarks: AFLW2000-3D's development part.

    PYTHONPATH=src:. python -m bench.accuracy_aflw2000 [--data ../shared/data/aflw2000-dev] \\
        [--model src/facevox/models/vrn-hg2-w192.onnx] [--candidate NEW.onnx] [--no-mirror] [--limit N] \\
        [--out bench/results/accuracy_aflw2000.json] [--points cache/aflw2000_points.npz]

Photos
    ../shared/data/aflw2000-dev: 500 photos of 450 px (200 / 150 / 150 with |yaw| 0–30 / 30–60 /
    60–90°), one labelled face each, 68 landmarks of a fitted 3D face (the jaw on the 3D jaw line, also
    where hidden). MEASURE ONLY. `--limit N` takes a fixed subset, N / 3 per bin (bench/aflw.stratified).
    Each photo goes as it is through each system (bench/aflw.Systems): facevox as shipped
    (`facevox.Reconstructor`, its detectors and crop rule; `--no-mirror` passes mirror=False), MediaPipe's
    face mesh (Surrey model fitted to its points), and the classic peer (Surrey model fitted to facevox's
    2D landmarks).

Metrics
    found       share of photos where the system returns a face matching the labelled one: the face
                whose 68 points' box centre lies nearest the labelled box's centre, within half the
                labelled box's width.
    nme         mean 2D distance of the 68 points over sqrt(w·h) of the box of the true 68 points, on
                the faces the system found; per |yaw| bin, and the mean of the three bins' means.
    over_20     share of found faces with NME > 20 %.
    groups      NME per landmark group (jaw 1–17, brows 18–27, nose 28–36, eyes 37–48, mouth 49–68,
                1-based iBUG) per bin.
    common      the same on the faces all three systems found.
    seconds     each system's mean time per photo (facevox: the whole pipeline; mediapipe: face mesh
                + fit; peer: the fit alone, on top of facevox's time).
`--points` keeps each system's 68 points per photo (NaN when not found) for bench/landmark_convention.py;
it goes under cache/ (ignored), never into the repository.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from bench.aflw import YAW_BINS, Systems, box_of, group_nme, point_errors, score_by_bin, stratified

ROOT = Path(__file__).resolve().parents[1]


def load(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(file names, true points (n, 68, 3), yaw (n,)) of the set."""
    with np.load(folder / "labels.npz") as labels:
        return [str(n) for n in labels["names"]], labels["points3d"].astype(np.float64), labels["pitch_yaw_roll"][:, 1].astype(np.float64)


def score(errors: dict, yaws: np.ndarray) -> dict:
    """errors: {system: (n, 68) per-point errors, NaN rows for faces not found} → the report."""
    found = {s: np.isfinite(e).all(1) for s, e in errors.items()}
    per_face = {s: e.mean(1) for s, e in errors.items()}

    def details(system, rows):
        nme = per_face[system][rows]
        return {"over_20": round(float((nme > 0.2).mean()), 4) if rows.any() else None, "groups": group_nme(errors[system][rows])}

    out = score_by_bin(per_face, found, yaws, details)
    for system in errors:
        out[system]["over_20"] = details(system, found[system])["over_20"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "aflw2000-dev"))
    parser.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    parser.add_argument("--no-mirror", action="store_true", help="facevox without the mirrored second pass")
    parser.add_argument("--limit", type=int, default=0, help="a fixed subset of about N photos, N/3 per yaw bin (0 = all)")
    parser.add_argument("--candidate", default=None, help="another ONNX model, run beside the first as the system 'candidate'")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "accuracy_aflw2000.json"))
    parser.add_argument("--points", default=str(ROOT / "cache" / "aflw2000_points.npz"), help="where to keep the points ('' = nowhere)")
    args = parser.parse_args()

    folder = Path(args.data)
    names, truth, yaws = load(folder)
    chosen = stratified(yaws, args.limit)
    systems = Systems(args.model, mirror=not args.no_mirror, threads=args.threads or None, candidate=args.candidate)
    points = {s: np.full((len(chosen), 68, 3), np.nan) for s in systems.names}
    started = time.time()
    for k, i in enumerate(chosen):
        image = cv2.imread(str(folder / "images" / names[i]), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
        for system, found in systems(image, box_of(truth[i])).items():
            if found is not None:
                points[system][k] = found
        if (k + 1) % 50 == 0:
            print(f"{k + 1}/{len(chosen)} photos, {time.time() - started:.0f} s", flush=True)

    errors = {s: np.stack([point_errors(p, truth[i]) for p, i in zip(points[s], chosen)]) for s in systems.names}
    results = {
        "data": "aflw2000-dev", "photos": len(chosen), "subset": f"stratified, {args.limit} asked" if args.limit else "all",
        "model": args.model or "shipped", "candidate": args.candidate, "mirror": not args.no_mirror,
        "systems": score(errors, yaws[chosen]),
        "seconds_per_photo": {s: round(t / max(len(chosen), 1), 3) for s, t in systems.seconds.items()},
        "seconds": round(time.time() - started, 1),
        "about": "68-point NME (2D) over sqrt(w*h) of the true 68 points' box, per |yaw| bin, on the faces each "
                 "system found; mediapipe and peer are Surrey-model fits (to MediaPipe's face mesh, to facevox's "
                 "landmarks). See bench/accuracy_aflw2000.py.",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    if args.points:
        Path(args.points).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.points, names=np.array(names)[chosen], yaw=yaws[chosen], **points)
    for system in systems.names:
        r = results["systems"][system]
        print(system, "found", r["found"], "mean of bins", r["mean_of_bins"],
              {b: r["by_bin"][b]["nme"].get("mean") for b in YAW_BINS})


if __name__ == "__main__":
    main()
