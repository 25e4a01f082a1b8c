"""CPU cost of each network size in the registry (facevox.net.CONFIGS), for choosing what ships.

    python -m bench.model_sizes [--runs 10]

Each size is exported to ONNX with random weights (speed does not depend on the weights) and timed on
onnxruntime with one 192×192 crop (median of --runs after a warm-up). Needs the [train] extra.
Writes bench/results/model_sizes.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from facevox.net import CONFIGS, VolumeNet
from training.export_onnx import Exported

RESULTS = Path(__file__).resolve().parent / "results"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, config in CONFIGS.items():
            net = VolumeNet(config).eval()
            path = Path(folder) / f"{name}.onnx"
            size = config.input_size
            torch.onnx.export(Exported(net), torch.rand(1, 3, size, size), str(path), input_names=["image"],
                              output_names=["volume", "heatmaps", "landmark_depth"], opset_version=17, dynamo=False)
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            crop = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
            session.run(None, {"image": crop})
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                session.run(None, {"image": crop})
                times.append(time.perf_counter() - started)
            rows.append({"name": name, "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
                         "onnx_mb_fp32": round(path.stat().st_size / 1e6, 1), "seconds_per_crop_median": round(statistics.median(times), 4)})
            print(json.dumps(rows[-1]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "model_sizes.json").write_text(json.dumps({"runs": args.runs, "sizes": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
