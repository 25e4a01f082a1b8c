"""21-point accuracy on real turned faces: AFLW crops with human-labelled points.

    PYTHONPATH=src:. python -m bench.accuracy_aflw [--data ../shared/data/aflw-faces] \\
        [--model src/facevox/models/vrn-hg2-w192.onnx] [--candidate NEW.onnx] [--no-mirror] [--limit N] \\
        [--out bench/results/accuracy_aflw.json]

Photos
    ../shared/data/aflw-faces: 3,000 crops of 120 px, 1,000 per |yaw| bin (0–30, 30–60, 60–90°), 21
    labelled points each, NaN where not visible. MEASURE ONLY. `--limit N` takes a fixed subset, N / 3
    per bin (bench/aflw.stratified). Each crop is padded by half its size on every side (border pixels
    replicated, training/label_real.prepare; then enlarged to 256 px) so the detectors see context, and
    goes through each system (bench/aflw.Systems: facevox as shipped, `--no-mirror` passed on;
    MediaPipe's face mesh; the classic peer). Each system's 68 points become AFLW's 21 by
    bench/aflw21.py (the 68 where they correspond, a mean head's vertices for ear lobes and nose sides).

Metrics
    found       share of crops where the system returns a face matching the labelled one: the face whose
                21 points, at the labelled (visible) ones, have a box centre nearest the labelled
                points' box centre, within half that box's width.
    nme         mean 2D distance over the visible points, over sqrt(w·h) of the visible labelled points'
                box, on the faces found; per |yaw| bin and the mean of the three bins' means.
    points      per-point NME (all bins) of each of the 21 points, to see which points cost most.
    common      nme on the crops all three systems found.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from bench.aflw import YAW_BINS, Systems, box_of, point_errors, score_by_bin, stratified
from bench.aflw21 import MeanHead, aflw21
from training.label_real import prepare

ROOT = Path(__file__).resolve().parents[1]
PAD = 0.5  # padding on every side, as a share of the crop's size


def score(errors: dict, yaws: np.ndarray) -> dict:
    """errors: {system: (n, 21) per-point errors, NaN at unlabelled points and for faces not found}."""
    found = {s: np.isfinite(e).any(1) for s, e in errors.items()}
    per_face = {s: np.nanmean(np.where(found[s][:, None], e, 0.0), axis=1) for s, e in errors.items()}
    out = score_by_bin(per_face, found, yaws)
    for system, e in errors.items():
        out[system]["points"] = [round(float(np.nanmean(e[found[system], p])), 5) for p in range(e.shape[1])]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "aflw-faces"))
    parser.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    parser.add_argument("--no-mirror", action="store_true", help="facevox without the mirrored second pass")
    parser.add_argument("--limit", type=int, default=0, help="a fixed subset of about N crops, N/3 per yaw bin (0 = all)")
    parser.add_argument("--candidate", default=None, help="another ONNX model, run beside the first as the system 'candidate'")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "accuracy_aflw.json"))
    args = parser.parse_args()

    folder = Path(args.data)
    with np.load(folder / "labels.npz") as labels:
        names, truth, yaws = [str(n) for n in labels["names"]], labels["points"].astype(np.float64), labels["yaw"].astype(np.float64)
    chosen = stratified(yaws, args.limit)
    head = MeanHead.from_ict()
    systems = Systems(args.model, mirror=not args.no_mirror, threads=args.threads or None, candidate=args.candidate)
    errors = {s: np.full((len(chosen), 21), np.nan) for s in systems.names}
    started = time.time()
    for k, i in enumerate(chosen):
        crop = cv2.imread(str(folder / "images" / names[i]), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
        image, scale, offset = prepare(crop, PAD)
        visible = np.isfinite(truth[i]).all(1)
        found = systems(image, box_of(truth[i]) * scale + offset, compared=lambda points: aflw21(points, head)[visible])
        for system, points in found.items():
            if points is not None:
                errors[system][k] = np.where(visible, point_errors((aflw21(points, head) - offset) / scale, truth[i]), np.nan)
        if (k + 1) % 100 == 0:
            print(f"{k + 1}/{len(chosen)} crops, {time.time() - started:.0f} s", flush=True)

    results = {
        "data": "aflw-faces", "crops": len(chosen),
        "subset": f"stratified by yaw bin, {len(chosen) // len(YAW_BINS)} per bin (--limit {args.limit})" if args.limit else "all",
        "model": args.model or "shipped", "candidate": args.candidate, "mirror": not args.no_mirror, "pad": PAD,
        "systems": score(errors, yaws[chosen]),
        "seconds_per_crop": {s: round(t / max(len(chosen), 1), 3) for s, t in systems.seconds.items()},
        "seconds": round(time.time() - started, 1),
        "about": "21-point NME (2D, visible points only) over sqrt(w*h) of the visible labelled points' box, per "
                 "|yaw| bin, on the faces each system found; 21 points from each system's 68 by bench/aflw21.py. "
                 "See bench/accuracy_aflw.py.",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    for system in systems.names:
        r = results["systems"][system]
        print(system, "found", r["found"], "mean of bins", r["mean_of_bins"],
              {b: r["by_bin"][b]["nme"].get("mean") for b in YAW_BINS})


if __name__ == "__main__":
    main()
