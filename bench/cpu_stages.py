"""CPU seconds per face of each stage that a `facevox batch --device cuda` worker runs itself (issue 7).

    PYTHONPATH=src:. python bench/cpu_stages.py [--photos DIR] [--count 100] [--out FILE] [--label TEXT]

Each photo (DIR's, or --count made by tests/photos.py) is reconstructed once by a Reconstructor on
onnxruntime (one thread). Each stage is timed with time.process_time (this process's CPU time, all
its threads): decode, detect, crop (the crop rule and warp, twice per face with refine), mesh (front
depth → surface; the front depth itself is made with the network, as the GPU network process does),
colour, write (GLB + JSON bytes, no disk). The network, heatmaps → landmarks (the GPU's, and another
change's) and head pose are left out. Writes bench/results/cpu_stages.json (or --out);
--label names the code measured in it. OpenMP, BLAS and OpenCV get one thread, as the batch
workers do, unless OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS / OPENCV_FOR_THREADS_NUM
say otherwise (the result records them): `OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2
OPENCV_FOR_THREADS_NUM=2` measures what two threads of spinning pools cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
LIBRARY_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")  # as facevox.batch.local sets them
for name in LIBRARY_THREADS:
    os.environ.setdefault(name, "1")

import numpy as np  # noqa: E402

STAGES = ("decode", "detect", "crop", "mesh", "colour", "write")


class FrontOnNetwork:
    """A network whose outputs carry their front depth and no volume, as the GPU network process sends them."""

    def __init__(self, model):
        self.model, self.info, self.input_size = model, model.info, model.input_size

    def __call__(self, crops, surface: bool = True):
        from facevox.mesh import front_depth

        outputs = self.model(crops, surface=surface)
        if surface:
            for output in outputs:
                output.front, output.volume = front_depth(output.volume), None
        return outputs


def photo_stages(reconstructor, path: str) -> list[dict[str, float]]:
    """CPU seconds of each stage for each face of one photo (decode and detect shared out evenly)."""
    from facevox import crop as crop_rule
    from facevox.api import Clock
    from facevox.export import export
    from facevox.errors import NoFaceError

    clock = Clock(time.process_time)
    try:
        photo, detections = reconstructor.find_faces(path, clock)
    except NoFaceError:
        return []
    shared = {stage: clock.laps[stage] / len(detections) for stage in ("decode", "detect")}
    size, crops = reconstructor.model.input_size, 2 if reconstructor.settings.refine else 1
    faces = []
    for detection in detections:
        clock = Clock(time.process_time)
        crop_rule.crop_image(photo.pixels, crop_rule.chain(crop_rule.crop_matrix(detection.box, size), photo.to_photo()), size)
        clock.lap("crop")
        face = reconstructor.reconstruct_face(photo, detection, clock)
        clock.lap("pose")  # the rest of reconstruct_face: landmarks to the photo, head pose (left out)
        export(face, "glb"), export(face, "json")
        clock.lap("write")
        faces.append(shared | {"crop": crops * clock.laps["crop"]} | {stage: clock.laps[stage] for stage in ("mesh", "colour", "write")})
    return faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", help="a folder of photos (default: --count made by tests/photos.py)")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu_stages.json")
    parser.add_argument("--label", default="", help="what code was measured, kept in the result")
    args = parser.parse_args()

    from facevox.api import Reconstructor
    from facevox.batch import find_inputs
    from facevox.volume import VolumeModel

    with tempfile.TemporaryDirectory() as scratch:
        if args.photos is None:
            from photos import make_photos

            make_photos(Path(scratch) / "photos", args.count, bad=False)
        keys, _, _ = find_inputs([args.photos or f"{scratch}/photos"])
        reconstructor = Reconstructor(network=FrontOnNetwork(VolumeModel(threads=1)))
        photo_stages(reconstructor, keys[0])  # warm-up: imports, first calls
        faces = [face for key in keys for face in photo_stages(reconstructor, key)]
    seconds = {stage: float(np.mean([face[stage] for face in faces])) for stage in STAGES}
    report = {
        "what": "CPU ms per face of the stages a batch worker runs itself (process_time, one thread; "
                "network and landmarks left out), see bench/cpu_stages.py",
        "code": args.label,
        "photos": args.photos or f"{len(keys)} made by tests/photos.py",
        "photo_count": len(keys), "faces": len(faces),
        "library_threads": {name: os.environ[name] for name in LIBRARY_THREADS},
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "cpu_ms_per_face": {stage: round(1e3 * s, 2) for stage, s in seconds.items()} | {"total": round(1e3 * sum(seconds.values()), 2)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
