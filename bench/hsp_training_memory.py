"""Activation memory of training the hierarchical head (facevox.hsp_net), measured on the CPU: the bytes
autograd keeps for the backward pass, per sample for the trunk with its dense heads and for level 0,
and per block for each finer level; and the true boundary blocks a face at each level on 16 held-out
renders (seeds 2·10^9, 2·10^9 + 1), under both boundary rules (training.hsp); to choose a batch size
and `--hsp-blocks` for a GPU.

    FACEVOX_SFM=../shared/data/sfm python -m bench.hsp_training_memory   # writes bench/results/hsp_training_memory.json

Measured in float32; under bf16 autocast on a GPU the convolutions keep bf16 copies, about half.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from facevox.net import create
from training.hsp import block_counts
from training.train import config


def saved_bytes(function) -> int:
    """Bytes of the tensors autograd saves while `function()` runs (each storage counted once)."""
    seen, total = set(), 0

    def pack(tensor):
        nonlocal total
        key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += key[1]
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function()
    return total


def boundary_blocks(grids: list[int], input_size: int) -> dict:
    """Mean true boundary blocks a face at levels 1, 2, ... and the finest level's boundary voxels, on
    held-out renders, for the visible surface alone and with the outline's walls (HSP's rule)."""
    from facevox.hsp_net import BOUNDARY, octant_max
    from training import sfm
    from training.hsp import HierarchyTargets
    from training.sources.synthetic import SyntheticFaces

    source = SyntheticFaces(sfm.load())
    batches = [source.sample(8, 2 * 10**9 + b) for b in range(2)]
    out = {}
    for rule, walls in (("front", False), ("all", True)):
        blocks, voxels = [], []
        for batch in batches:
            targets = HierarchyTargets(batch.depth, batch.mask, grids, input_size, walls=walls)
            blocks.append([(octant_max((targets.all_labels(level) == BOUNDARY).float()) > 0).flatten(1).sum(1).float().mean().item()
                           for level in range(len(grids) - 1)])
            voxels.append(targets.boundary_voxels(len(grids) - 1).mean().item())
        out[rule] = {"blocks": [sum(b[i] for b in blocks) / len(blocks) for i in range(len(grids) - 1)],
                     "finest_boundary_voxels": sum(voxels) / len(voxels), "faces": 8 * len(batches)}
    return out


def main():
    name = "hsp-hg2-w192"
    net = create(name)
    size = net.config.input_size
    image = torch.rand(2, 3, size, size)
    results = {"net": name, "dtype": "float32 (CPU)"}
    results["trunk_and_dense_heads_per_sample"] = saved_bytes(lambda: [t.sum() for t in net(image)]) / 2
    with torch.no_grad():
        decoded = net.trunk(image)
    decoded.requires_grad_(True)
    coarse = net.coarse(decoded)
    results["level0_per_sample"] = saved_bytes(lambda: net.coarse(decoded)) / 2
    parent, count = None, 4
    for level in range(1, net.config.hsp_levels):
        candidates = net.candidates(level, coarse, parent)
        chosen = candidates.take(torch.arange(count))
        results[f"level{level}_per_block"] = saved_bytes(lambda: net.blocks(level, coarse, parent, chosen)) / count
        parent = net.blocks(level, coarse, parent, chosen)
    per_sample = results["trunk_and_dense_heads_per_sample"] + results["level0_per_sample"]
    blocks = block_counts(config["hsp_blocks"], net.config.hsp_levels)
    results["training_default"] = {"batch_size": config["batch_size"], "hsp_blocks": blocks, "GiB": (
        config["batch_size"] * per_sample + sum(n * results[f"level{i + 1}_per_block"] for i, n in enumerate(blocks))) / 2**30}
    results["boundary_blocks_per_face"] = boundary_blocks(net.grids, size)
    path = Path(__file__).parent / "results" / "hsp_training_memory.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
