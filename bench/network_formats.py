"""The network alone on a GPU in each number format of facevox.torch_volume.TorchVolumeModel: crops/s
of one full pass (forward, landmarks and front depth, as the batch network process runs it) by batch
size, and how far each format's outputs are from fp32's on real face crops.

    python3 bench/network_formats.py [--photos DIR] [--batch-sizes 16,32,64] [--out bench/results/network_formats.json]

Formats: fp32 (TF32 convolutions, torch's default on CUDA), and the whole network cast to fp16 or
bf16 in channels-last layout. For each: crops/s per batch size (after warm-up calls, cuDNN's
autotuning among them; synchronised wall time over ≥ 1.5 s and ≥ 3 calls, `bench.gpu_throughput.timed`) and, against fp32 on the same crops, the
largest landmark shift (crop px), the mean and largest front-depth difference over the pixels both
masks cover (voxels), and the smallest mask IoU.
Needs a face detector (as bench/gpu_throughput.py); `--device cpu --batch-sizes 2` is a smoke test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "tests")]

import numpy as np  # noqa: E402


def one_pass(model, images):
    """The network process's work for a full pass over (n, s, s, 3) uint8 crops on the device: forward,
    landmarks and front depth."""
    from facevox.torch_volume import front_depth, landmarks_from_heatmaps

    volume, heatmaps, depth = model.forward(images)
    return (*front_depth(volume), landmarks_from_heatmaps(heatmaps, depth, model.input_size))


def crops_per_second(run, images, batch: int) -> float:
    """Crops per second of run on the first `batch` images, synchronised with the device
    (bench.gpu_throughput.timed: warm-up calls first, cuDNN's autotuning among them)."""
    import torch

    from bench.gpu_throughput import timed

    x = images[:batch]
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    return batch / timed(lambda: (run(x), sync()))


def difference(reference, outputs) -> dict:
    (d0, m0, p0), (d1, m1, p1) = ([t.cpu().numpy() for t in o] for o in (reference, outputs))
    shifts, depth_means, depth_max, ious = [], [], [], []
    for i in range(len(d0)):
        shifts.append(np.abs(p0[i, :, :2] - p1[i, :, :2]).max())
        both = m0[i] & m1[i]
        gap = np.abs(d0[i][both] - d1[i][both])
        depth_means.append(gap.mean())
        depth_max.append(gap.max())
        ious.append(both.sum() / max((m0[i] | m1[i]).sum(), 1))
    return {"max_landmark_shift_px": round(float(max(shifts)), 3), "mean_front_depth_difference": round(float(np.mean(depth_means)), 4),
            "max_front_depth_difference": round(float(max(depth_max)), 3), "min_mask_iou": round(float(min(ious)), 4)}


def main() -> None:
    import torch

    from bench.gpu_throughput import face_crops, inputs
    from facevox.torch_volume import PRECISIONS, TorchVolumeModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", help="a folder of photos (default: made by tests/photos.py)")
    parser.add_argument("--batch-sizes", default="16,32,64")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test only")
    parser.add_argument("--model", help="another ONNX model (a JSON of its sizes beside it)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "network_formats.json")
    args = parser.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]

    torch.backends.cudnn.benchmark = True
    size = TorchVolumeModel(args.model, args.device).input_size
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        keys, _ = inputs(args.photos, 200, Path(scratch))
        crops, _ = face_crops(keys, size, limit=max(batches))
    while len(crops) < max(batches):  # repeat the crops up to the largest batch
        crops = np.concatenate([crops, crops])[: max(batches)]
    results, reference = {}, None
    with torch.inference_mode():
        for precision in PRECISIONS:
            model = TorchVolumeModel(args.model, args.device, precision)
            images = torch.from_numpy(crops).to(model.device)
            run = lambda x: one_pass(model, x)  # noqa: E731
            entry = {"crops_per_second": {str(b): round(crops_per_second(run, images, b), 1) for b in batches}}
            outputs = run(images[:min(32, len(images))])
            if reference is None:
                reference = outputs
            else:
                entry["against_fp32"] = difference(reference, outputs)
            results[precision] = entry
            print(precision, json.dumps(entry), flush=True)
    result = {"what": __doc__.splitlines()[0], "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device, "torch": torch.__version__,
              "faces": len(set(map(bytes, crops))), "formats": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
