"""Face detectors side by side on the labelled photo sets, and their CPU time (issue 15).

    PYTHONPATH=src:. python bench/detection.py [--detectors mediapipe,haar,mediapipe+haar]
        [--data ../shared/data] [--per-bin N] [--repeats 7] [--out bench/results/detection.json]

Each detector is named as in facevox.faces.DETECTORS, with keyword arguments after colons
("facevox:min_score=0.3:threads=2"); "a+b" is the list [a, b] as facevox runs it (b only where a
finds no face). Every photo goes through facevox.faces.detect_faces, as the pipeline
runs it (large photos shrunk, overlapping boxes merged, boxes in the photo's own pixels).

- group-photos (boxes.json, dlib's boxes): a labelled face is found when a detection's centre lies
  within half the labelled box's width of the box's centre, or their IoU is at least 0.3; each
  detection finds at most one face (pairs taken nearest first). Faces marked "ignore" are not counted,
  and a detection on one is not false. False detections: those that match no labelled face (by the same
  rule), on the photos with people; dogs.jpg's detections are counted apart.
- real-faces and celeb-faces, the 'val' splits of training/splits.py: the share of photos with at
  least one detection, each photo padded as bench/accuracy_real.py pads it (the border replicated by
  30 % / 35 % of the longer side on every side, then enlarged to 256 px if smaller).
- aflw-faces (120 px crops, MEASURE ONLY), padded by 35 % of the side on every side (border replicated)
  and enlarged to 256 px: per |yaw| bin, the share of crops where a detection's box contains the
  centre of the box of the visible labelled points.
- aflw2000-dev (450 px photos, MEASURE ONLY): per |yaw| bin, the share of photos whose labelled face
  (the box of its 68 points' x, y) is found by the group-photos rule.
- CPU: detect_faces on the astronaut at 640 × 640 px and on a 4000 × 3000 (12 MP) photo made of the
  astronaut enlarged to 3000 px on grey; one warm-up, then the median of --repeats runs of process CPU
  time (all threads) and of wall time, on this machine as it is (os.cpu_count() in the JSON).

--check passes each detector's boxes through the pipeline's check (the volume network's first pass on
the box's crop must see a face: facevox.api.Settings.min_evidence) before anything else; CPU times
stay the detectors' own.

--per-bin N measures only the first N photos of each |yaw| bin of aflw-faces and aflw2000-dev (in the
order of their labels.npz); the JSON says how many were measured. Writes bench/results/detection.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

YAW_BINS = ((0, 30), (30, 60), (60, 90))
PAD = {"real-faces": 0.3, "celeb-faces": 0.35, "aflw-faces": 0.35}  # every side, share of the longer side
MIN_SIDE = 256  # padded photos smaller than this (longer side) are enlarged to it


def pad(image: np.ndarray, share: float) -> tuple[np.ndarray, float, float]:
    """The photo with its border replicated by `share` of its longer side, enlarged to MIN_SIDE if
    smaller → (padded, scale, offset): a photo point p lies at p · scale + offset in it."""
    border = int(round(share * max(image.shape[:2])))
    padded = np.pad(image, ((border, border), (border, border), (0, 0)), mode="edge")
    scale = max(1.0, MIN_SIDE / max(padded.shape[:2]))
    if scale > 1.0:
        size = (int(round(padded.shape[1] * scale)), int(round(padded.shape[0] * scale)))
        padded = np.asarray(Image.fromarray(padded).resize(size, Image.BICUBIC))
        scale = size[0] / (image.shape[1] + 2 * border)
    return padded, scale, (border + 0.5) * scale - 0.5


def yaw_bin(yaw: float) -> str:
    for low, high in YAW_BINS:
        if abs(yaw) < high or high == YAW_BINS[-1][1]:
            return f"{low}-{high}"
    raise AssertionError


def is_match(detected: np.ndarray, labelled: np.ndarray) -> bool:
    """The group-photos rule: centres within half the labelled box's width, or IoU ≥ 0.3."""
    from facevox.faces import box_iou

    centre = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])  # noqa: E731
    near = np.linalg.norm(centre(detected) - centre(labelled)) <= 0.5 * (labelled[2] - labelled[0])
    return bool(near or box_iou(detected, labelled) >= 0.3)


def pair(detected: list[np.ndarray], labelled: list[np.ndarray]) -> list[tuple[int, int]]:
    """(detection, face) pairs that match, each used once, nearest centres first."""
    candidates = []
    for i, d in enumerate(detected):
        for j, f in enumerate(labelled):
            if is_match(d, f):
                distance = np.hypot((d[0] + d[2] - f[0] - f[2]) / 2, (d[1] + d[3] - f[1] - f[3]) / 2)
                candidates.append((distance, i, j))
    used_d, used_f, pairs = set(), set(), []
    for _, i, j in sorted(candidates):
        if i not in used_d and j not in used_f:
            used_d.add(i), used_f.add(j), pairs.append((i, j))
    return pairs


def make_detector(name: str):
    """A detector by its DETECTORS name, with keyword arguments after colons: "facevox:threads=2:min_score=0.3"."""
    from facevox.faces import DETECTORS

    base, *options = name.split(":")
    return DETECTORS[base](**{key: type_of(value)(value) for key, value in (option.split("=") for option in options)})


def type_of(value: str):
    return int if value.isdigit() else float


class Runner:
    """Each base detector made once; each photo's detections per base detector computed once, so that
    "a+b" costs nothing more than a and b (detect_faces stops at the first detector that finds a face)."""

    def __init__(self, names: list[str], check: bool = False):
        self.names = names
        self.bases = {base: make_detector(base) for name in names for base in name.split("+")}
        self.network = None
        if check:  # the pipeline's check: a detection stays only where the network sees a face
            from facevox.api import Settings
            from facevox.volume import VolumeModel

            self.network, self.min_evidence = VolumeModel(mirror=False), Settings().min_evidence

    def checked(self, image: np.ndarray, detections: list) -> list[np.ndarray]:
        """The boxes the pipeline keeps (as Reconstructor.reconstruct): the confident detections the
        network calls a face (all of them without --check), else the fallback ones it does."""
        from facevox import crop
        from facevox.faces import tiers

        for tier in tiers(detections):
            if tier and self.network is not None:
                size = self.network.input_size
                crops = np.stack([crop.crop_image(image, crop.crop_matrix(d.box, size), size) for d in tier])
                tier = [d for d, output in zip(tier, self.network(crops, surface=False)) if output.evidence() >= self.min_evidence]
            if tier:
                return [d.box for d in tier]
        return []

    def boxes(self, image: np.ndarray) -> dict[str, list[np.ndarray]]:
        from facevox.faces import detect_faces

        per_base = {base: self.checked(image, detect_faces(image, [detector])) for base, detector in self.bases.items()}
        found = {}
        for name in self.names:
            found[name] = next((per_base[b] for b in name.split("+") if per_base[b]), [])
        return found


def load(path: Path) -> np.ndarray:
    from facevox.image import load_image

    return load_image(str(path))


def group_photos(runner: Runner, folder: Path) -> dict:
    labels = json.loads((folder / "boxes.json").read_text())
    result = {name: {"faces": 0, "found": 0, "false_detections": 0, "detections_on_dogs": 0} for name in runner.names}
    for file, entry in sorted(labels.items()):
        faces = [np.array(f["box"], float) for f in entry["faces"]]
        counted = [not f["ignore"] for f in entry["faces"]]
        for name, boxes in runner.boxes(load(folder / file)).items():
            r = result[name]
            if file == "dogs.jpg":
                r["detections_on_dogs"] += len(boxes)
                continue
            pairs = pair(boxes, faces)
            r["faces"] += sum(counted)
            r["found"] += sum(counted[j] for _, j in pairs)
            matched = {i for i, _ in pairs}
            r["false_detections"] += sum(i not in matched and not any(is_match(b, f) for f in faces) for i, b in enumerate(boxes))
    return result


def found_any(runner: Runner, files: list[Path], share: float) -> dict:
    counts = {name: 0 for name in runner.names}
    for file in files:
        for name, boxes in runner.boxes(pad(load(file), share)[0]).items():
            counts[name] += bool(boxes)
    return {name: {"photos": len(files), "with_a_face": n, "share": round(n / max(len(files), 1), 4)} for name, n in counts.items()}


def chosen(yaws: np.ndarray, per_bin: int | None) -> list[int]:
    """Indices of the photos measured: all, or the first per_bin of each |yaw| bin."""
    taken, kept = {}, []
    for i, yaw in enumerate(yaws):
        b = yaw_bin(float(yaw))
        if per_bin is None or taken.get(b, 0) < per_bin:
            taken[b] = taken.get(b, 0) + 1
            kept.append(i)
    return kept


def per_bin_shares(hits: dict[str, dict[str, list[bool]]]) -> dict:
    return {name: {b: {"photos": len(v), "found": int(sum(v)), "share": round(sum(v) / max(len(v), 1), 4)}
                   for b, v in sorted(bins.items())} for name, bins in hits.items()}


def aflw_faces(runner: Runner, folder: Path, per_bin: int | None) -> dict:
    labels = np.load(folder / "labels.npz")
    hits = {name: {} for name in runner.names}
    for i in chosen(labels["yaw"], per_bin):
        points = labels["points"][i]
        points = points[~np.isnan(points).any(axis=1)]
        padded, scale, offset = pad(load(folder / "images" / str(labels["names"][i])), PAD["aflw-faces"])
        x, y = (points.min(0) + points.max(0)) / 2 * scale + offset
        b = yaw_bin(float(labels["yaw"][i]))
        for name, boxes in runner.boxes(padded).items():
            hits[name].setdefault(b, []).append(any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in boxes))
    return per_bin_shares(hits)


def aflw2000(runner: Runner, folder: Path, per_bin: int | None) -> dict:
    labels = np.load(folder / "labels.npz")
    yaws = labels["pitch_yaw_roll"][:, 1]
    hits = {name: {} for name in runner.names}
    for i in chosen(yaws, per_bin):
        xy = labels["points3d"][i][:, :2]
        face = np.concatenate([xy.min(0), xy.max(0)])
        b = yaw_bin(float(yaws[i]))
        for name, boxes in runner.boxes(load(folder / "images" / str(labels["names"][i]))).items():
            hits[name].setdefault(b, []).append(bool(pair(boxes, [face])))
    return per_bin_shares(hits)


def timing_photos() -> dict[str, np.ndarray]:
    from skimage.data import astronaut

    face = astronaut()
    large = np.full((3000, 4000, 3), 128, np.uint8)
    large[:, 500:3500] = np.asarray(Image.fromarray(face).resize((3000, 3000), Image.BICUBIC))
    return {"640x640": np.asarray(Image.fromarray(face).resize((640, 640), Image.BICUBIC)), "4000x3000": large}


def cpu_times(names: list[str], repeats: int) -> dict:
    from facevox.faces import detect_faces

    photos, result = timing_photos(), {}
    for name in names:
        detectors, result[name] = [make_detector(base) for base in name.split("+")], {}
        for size, photo in photos.items():
            detect_faces(photo, detectors)  # warm-up
            cpu, wall = [], []
            for _ in range(repeats):
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                found = detect_faces(photo, detectors)
                cpu.append(time.process_time() - start_cpu)
                wall.append(time.perf_counter() - start_wall)
            result[name][size] = {"cpu_ms_median": round(statistics.median(cpu) * 1e3, 1),
                                  "wall_ms_median": round(statistics.median(wall) * 1e3, 1),
                                  "repeats": repeats, "faces_found": len(found)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", default="mediapipe,haar,mediapipe+haar", help="comma-separated names; a+b: b where a finds none")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--per-bin", type=int, help="only the first N photos of each |yaw| bin of the aflw sets")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--check", action="store_true", help="keep only detections the volume network calls a face (Settings.min_evidence), as the pipeline does")
    parser.add_argument("--timing-only", action="store_true", help="only the CPU times, no photo sets")
    parser.add_argument("--sets", default="group-photos,real-faces,celeb-faces,aflw-faces,aflw2000-dev", help="comma-separated photo sets to run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "detection.json")
    args = parser.parse_args()

    from training.splits import celeb_faces, real_faces

    names = args.detectors.split(",")
    runner = Runner(names, args.check)
    started = time.perf_counter()
    sets = {}
    if args.timing_only:
        cpu = cpu_times(names, args.repeats)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"what": "CPU and wall time of facevox.faces.detect_faces per photo (bench/detection.py)",
                                        "command": "PYTHONPATH=src:. python bench/detection.py " + " ".join(sys.argv[1:]),
                                        "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0], "python": platform.python_version()},
                                        "detect_faces_time": cpu}, indent=1) + "\n")
        return
    chosen_sets = args.sets.split(",")
    if "group-photos" in chosen_sets:
        sets["group-photos"] = group_photos(runner, args.data / "group-photos")
    for set_name, split in (("real-faces", real_faces), ("celeb-faces", celeb_faces)):
        if set_name in chosen_sets:
            sets[f"{set_name} val"] = found_any(runner, split(args.data / set_name, "val"), PAD[set_name])
    if "aflw-faces" in chosen_sets:
        sets["aflw-faces"] = aflw_faces(runner, args.data / "aflw-faces", args.per_bin)
    if "aflw2000-dev" in chosen_sets:
        sets["aflw2000-dev"] = aflw2000(runner, args.data / "aflw2000-dev", args.per_bin)
    for set_name, result in sets.items():
        print(set_name, json.dumps(result), flush=True)
    cpu = cpu_times(names, args.repeats)
    print("cpu", json.dumps(cpu), flush=True)

    by_detector = {name: {set_name: result[name] for set_name, result in sets.items()} | {"detect_faces_time": cpu[name]}
                   for name in names}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "face detectors side by side through facevox.faces.detect_faces (bench/detection.py; the rules are in its docstring)",
        "command": "PYTHONPATH=src:. python bench/detection.py " + " ".join(sys.argv[1:]),
        "aflw_photos_per_bin": args.per_bin or "all",
        "machine": {"cpus": os.cpu_count(), "processor": platform.machine(), "python": platform.python_version()},
        "seconds": round(time.perf_counter() - started),
        "detectors": by_detector}, indent=1) + "\n")


if __name__ == "__main__":
    main()
