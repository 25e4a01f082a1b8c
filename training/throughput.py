"""Training throughput of the volume network: samples per second for whole steps (data synthesis
included) under several loop settings, side by side in one run, and where the time goes.

    python -m training.throughput --real-labels cache/labels --photos cache/real-faces \
        --variants "batch_size=32,ahead=0" "batch_size=128,ahead=2,compile=1" --json runs/throughput.json

Each variant trains a fresh copy of the network (from --init-onnx when given) for --steps timed steps
after --warmup steps, with the data stream, step and losses of training/train.py. For each batch
size it also times drawing batches alone and training on one fixed batch alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from facevox.torch_volume import from_onnx
from training import train


def synchronise(device: str):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def rate(step, count: int, warmup: int, device: str, samples_per_call: int) -> float:
    """Samples per second of `step()` over `count` calls after `warmup` calls."""
    for _ in range(warmup):
        step()
    synchronise(device)
    started = time.perf_counter()
    for _ in range(count):
        step()
    synchronise(device)
    return count * samples_per_call / (time.perf_counter() - started)


def parse_variant(text: str) -> dict:
    values = dict(item.split("=") for item in text.split(","))
    return {key: type(train.config[key])(value) for key, value in values.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["batch_size=32,ahead=0"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--json", default="runs/throughput.json")
    for key in ("init_onnx", "photos", "real_labels", "real_photos", "landmarks", "net", "ict"):
        parser.add_argument(f"--{key.replace('_', '-')}", default=train.config[key])
    parser.add_argument("--ict-fraction", type=float, default=0.0)
    args = parser.parse_args()
    cfg = dict(train.config, **{k: getattr(args, k) for k in ("init_onnx", "photos", "real_labels", "real_photos", "landmarks", "net", "ict")},
               ict_fraction=args.ict_fraction)
    device = cfg["device"]
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    source, _ = train.build_sources(cfg)

    results, parts_timed = [], {}
    for text in args.variants:
        variant = dict(cfg, **parse_variant(text))
        size = variant["batch_size"]
        net = train.new_net(variant["net"], device)
        if variant["init_onnx"]:
            from_onnx(net, variant["init_onnx"], partial=bool(net.config.hsp_levels))
        optimizer = torch.optim.AdamW(train.parameter_groups(net, 1.0), lr=1e-5)
        step_losses = torch.compile(train.losses) if variant["compile"] else train.losses
        seeds = (7 * 10**8 + i for i in itertools.count())
        stream = train.batches(source, size, seeds, variant["ahead"], device)
        if torch.device(device).type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            whole = rate(lambda: train.train_step(step_losses, net, optimizer, next(stream), variant), args.steps, args.warmup, device, size)
        except Exception as error:  # a variant that cannot run (e.g. compile) is reported, not fatal
            results.append({"variant": text, "error": f"{type(error).__name__}: {error}"[:500]})
            print(json.dumps(results[-1]), flush=True)
            continue
        record = {"variant": text, "samples_per_s": round(whole, 1), "seconds": round(time.perf_counter() - started, 1)}
        if torch.device(device).type == "cuda":
            record["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if size not in parts_timed:
            fixed = source.sample(size, 1)
            parts_timed[size] = {
                "sampling_only_per_s": round(rate(lambda: source.sample(size, 2), args.steps // 3, 2, device, size), 1),
                "step_only_per_s": round(rate(lambda: train.train_step(train.losses, net, optimizer, fixed, variant), args.steps // 2, 5, device, size), 1),
            }
        record.update(parts_timed[size])
        results.append(record)
        print(json.dumps(record), flush=True)
        del net, optimizer, stream

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"device": gpu, "steps": args.steps, "warmup": args.warmup, "mixture": bool(cfg["real_labels"]),
                                           "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
