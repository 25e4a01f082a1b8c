"""Choosing facevox's detector threshold together with the pipeline's check, on held-out photos only.

    PYTHONPATH=src:. python bench/detector_thresholds.py [--data ../shared/data] [--limit N]

Every candidate box facevox's detector gives at a low score (0.1) is kept with its score and the
volume network's evidence on its crop (the pipeline's check, facevox.api.Settings.min_evidence). Then,
for each pair (detector min_score, min_evidence): the share of held-out photos (the `val` splits of
real-faces and celeb-faces, padded as bench/detection.py pads them) left with at least one face, the
candidates the network must check per photo (its cost), and the candidates accepted on scikit-image's
pictures without people (training/scenes.FACE_FREE_PICTURES, which the detector saw as negatives in
training, the network never). Then the same for the pipeline's tiers as shipped (confident candidates
from 0.4 with evidence ≥ 0.4; fallback candidates from 0.15, tried only where no confident one is a
face) against the evidence a fallback candidate must show. No measuring set (aflw, group photos) is
read. Writes bench/results/detector_thresholds.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import numpy as np  # noqa: E402

SCORES = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
EVIDENCES = (0.35, 0.4, 0.45, 0.5)
CONFIDENT, FALLBACK, MIN_EVIDENCE = 0.4, 0.15, 0.4  # as shipped
FALLBACK_EVIDENCES = (0.4, 0.5, 0.6, 0.7, 0.8)


def candidates(image: np.ndarray, detector, network) -> list[tuple[float, float]]:
    """(detector score, network evidence) of each candidate face in the photo."""
    from facevox import crop
    from facevox.faces import detect_faces

    found = detect_faces(image, [detector])
    if not found:
        return []
    size = network.input_size
    crops = np.stack([crop.crop_image(image, crop.crop_matrix(d.box, size), size) for d in found])
    return [(float(d.score), float(output.evidence())) for d, output in zip(found, network(crops, surface=False))]


def grid(per_photo: list[list[tuple[float, float]]]) -> dict:
    out = {}
    for score in SCORES:
        for evidence in EVIDENCES:
            kept = [[e for s, e in photo if s >= score] for photo in per_photo]
            out[f"{score}/{evidence}"] = {
                "with_a_face": round(float(np.mean([any(e >= evidence for e in photo) for photo in kept])), 4),
                "checked_per_photo": round(float(np.mean([len(photo) for photo in kept])), 3),
                "accepted": int(sum(e >= evidence for photo in kept for e in photo)),
            }
    return out


def tiered(per_photo: list[list[tuple[float, float]]]) -> dict:
    """Photos left with a face (and those where a fallback candidate gave it), and faces accepted, by
    the evidence a fallback candidate must show."""
    out = {}
    for fallback_evidence in FALLBACK_EVIDENCES:
        with_a_face = by_fallback = accepted = 0
        for photo in per_photo:
            faces = [e for s, e in photo if s >= CONFIDENT and e >= MIN_EVIDENCE]
            if not faces:
                faces = [e for s, e in photo if FALLBACK <= s < CONFIDENT and e >= fallback_evidence]
                by_fallback += bool(faces)
            with_a_face += bool(faces)
            accepted += len(faces)
        out[str(fallback_evidence)] = {"with_a_face": round(with_a_face / max(len(per_photo), 1), 4),
                                       "found_by_a_fallback": by_fallback, "accepted": accepted}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=0, help="at most this many photos per set (0 = all)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "detector_thresholds.json")
    args = parser.parse_args()

    from bench.detection import PAD, load, pad
    from facevox.faces import OnnxFaceDetector
    from facevox.volume import VolumeModel
    from training.scenes import face_free_pictures
    from training.splits import celeb_faces, real_faces

    detector, network = OnnxFaceDetector(min_score=min(SCORES)), VolumeModel(mirror=False)
    started, sets = time.perf_counter(), {}
    for name, split in (("real-faces", real_faces), ("celeb-faces", celeb_faces)):
        files = split(args.data / name, "val")[: args.limit or None]
        sets[f"{name} val"] = [candidates(pad(load(f), PAD[name])[0], detector, network) for f in files]
        print(name, len(files), flush=True)
    sets["face-free pictures"] = [candidates(picture, detector, network) for picture in face_free_pictures()]
    result = {name: {"photos": len(photos), "by_min_score_and_min_evidence": grid(photos),
                     "tiers_by_fallback_evidence": tiered(photos)} for name, photos in sets.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"what": __doc__.splitlines()[0], "command": "python bench/detector_thresholds.py " + " ".join(sys.argv[1:]),
                                    "seconds": round(time.perf_counter() - started), "sets": result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
