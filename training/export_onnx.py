"""Export a trained VolumeNet to the runtime's ONNX contract (docs/architecture.md) + its JSON; an HSP net
(facevox.hsp_net) as its trunk graph and one graph per level (docs/hsp.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facevox.hsp_net import (BLOCK, CONTEXT, CROP, HALO, MAX_BLOCKS, OCTANT, SPAN, HSPNet, boundary_probability, cut_windows,
                             grid_sizes, level_outputs, octant_max, windows)
from facevox.net import CONFIGS, VolumeNet, build
from training import sfm

LICENCE = ("Non-commercial use only: trained on shapes of the Surrey Face Model (non-commercial licence) "
           "rendered with background clutter from web-collected photos.")
LICENCE_REAL = ("Non-commercial use only: trained on shapes of the Surrey Face Model (non-commercial licence), "
                "web-collected photos and CelebA-derived face crops (non-commercial research use).")
DATA_SYNTHETIC = "synthetic Surrey Face Model renders (training/sources/synthetic.py)"
DATA_REAL = (DATA_SYNTHETIC + " mixed with real photos (real-faces, celeb-faces) carrying fitted Surrey labels, "
             "as photographed and profiled (training/sources/real.py)")
DATA_ICT = ", and ICT FaceKit heads (training/sources/ict.py; ICT FaceKit, MIT licence)"


class Exported(torch.nn.Module):
    """The network as the runtime sees it: occupancy probabilities instead of logits."""

    def __init__(self, net: VolumeNet):
        super().__init__()
        self.net = net

    def forward(self, image):
        volume, heatmaps, landmark_depth = self.net(image)
        return torch.sigmoid(volume), heatmaps, landmark_depth


class ExportedTrunk(torch.nn.Module):
    """An HSP net's first graph: the landmark maps, level 0's octant scores (highest boundary
    probability of each 8³ octant) and what level 1's blocks read, padded as the blocks read them
    (facevox.hierarchy): level 0's features and each level's image features (on its parent's grid) by
    CONTEXT, the prior logits by HALO."""

    def __init__(self, net: HSPNet):
        super().__init__()
        self.net = net

    def forward(self, image):
        decoded = self.net.trunk(image)
        heatmaps, landmark_depth = self.net.landmark_maps(decoded)
        coarse = self.net.coarse(decoded)
        scores = octant_max(boundary_probability(coarse.classes))
        features = F.pad(coarse.features, (CONTEXT,) * 6)
        prior = F.pad(coarse.prior, (HALO,) * 6, mode="replicate")
        return heatmaps, landmark_depth, scores, features, prior, *(F.pad(m, (CONTEXT,) * 4) for m in coarse.images)


class ExportedLevel(torch.nn.Module):
    """One level's block head: parent crops in (cut to hsp_net.windows); the block's features and
    occupancy logits over SPAN³ (its children's context), the octant scores of its core and, for meshes,
    the occupancy probability of its core with the voxel in front of it in depth ((n, 17, 16, 16)); the
    last level: that alone."""

    def __init__(self, net: HSPNet, level: int):
        super().__init__()
        self.net, self.level = net, level

    def forward(self, features, prior, image):
        return level_outputs(self.net.levels[self.level - 1], features, prior, image)


def level_inputs(net: HSPNet, level: int, count: int) -> dict[str, torch.Tensor]:
    """Random inputs of `level`'s graph for `count` blocks."""
    head, channels = net.levels[level - 1], net.config.hsp_channels
    prior = CROP if head.prior_from_parent else SPAN
    inputs = {"parent_features": torch.rand(count, channels, CROP, CROP, CROP), "prior": torch.randn(count, 1, prior, prior, prior),
              "image": torch.rand(count, channels, CROP, CROP)}
    return dict(zip(inputs, cut_windows(head, *inputs.values())))


def level_files(path: Path, levels: int) -> list[str]:
    return [f"{path.stem}.level{level}.onnx" for level in range(1, levels)]


def export_hierarchical(net: HSPNet, path: Path, threshold: float) -> dict:
    """Write an HSP net's graphs: PATH (trunk, landmarks, level 0) and PATH.levelN.onnx; returns the
    JSON's entries that describe them."""
    c, size = net.config, net.config.input_size
    image_names = [f"image{level}" for level in range(1, c.hsp_levels)]
    outputs = ["heatmaps", "landmark_depth", "scores0", "features0", "prior1", *image_names]
    # The wrappers stay in training mode and the net in eval mode, as for the dense export: PRESERVE then
    # changes no module's mode, and the exporter merges no two equal weights (each keeps its name).
    torch.onnx.export(ExportedTrunk(net), torch.rand(1, 3, size, size), str(path), input_names=["image"], output_names=outputs,
                      dynamic_axes={name: {0: "batch"} for name in ["image", *outputs]}, opset_version=17, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE)
    for level, name in enumerate(level_files(path, c.hsp_levels), start=1):
        inputs = tuple(level_inputs(net, level, 2).values())
        final = level == c.hsp_levels - 1
        outputs = ["probability"] if final else ["features", "occupancy", "scores", "probability"]
        torch.onnx.export(ExportedLevel(net, level), inputs, str(path.parent / name), input_names=["parent_features", "prior", "image"],
                          output_names=outputs, dynamic_axes={n: {0: "blocks"} for n in ["parent_features", "prior", "image", *outputs]},
                          opset_version=17, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                          do_constant_folding=False)  # weights combined in the graph keep their own (onnxruntime folds them)
    hierarchy = {"grids": grid_sizes(c), "block": BLOCK, "octant": OCTANT, "context": CONTEXT, "halo": HALO,
                 "channels": c.hsp_channels, "threshold": threshold, "max_blocks": list(MAX_BLOCKS),
                 # where each level graph's inputs lie in the crops cut for it (parent features and prior CROP³
                 # at the octant's crop corner, image CROP² at the same corner on the parent's lateral grid)
                 "windows": [{name: [list(offset), list(size)] for name, (offset, size) in windows(head).items()}
                             for head in net.levels]}
    return {"hierarchy": hierarchy, "level_files": level_files(path, c.hsp_levels), "hsp_levels": c.hsp_levels,
            "hsp_channels": c.hsp_channels}


def export(net: VolumeNet, path: Path, metadata: dict, landmarks: str = "contour", threshold: float = 0.08) -> None:
    """Write the ONNX file and its JSON; `landmarks`: the training run's landmark convention
    (training.sfm.load). An HSP net writes its level graphs beside it (`export_hierarchical`;
    threshold: its octant refinement threshold)."""
    net = net.float().eval()
    size = net.config.input_size
    c = net.config
    extra = {}
    if c.hsp_levels:
        extra = export_hierarchical(net, path, threshold)
    else:
        torch.onnx.export(
            Exported(net), torch.rand(1, 3, size, size), str(path), input_names=["image"],
            output_names=["volume", "heatmaps", "landmark_depth"],
            dynamic_axes={name: {0: "batch"} for name in ("image", "volume", "heatmaps", "landmark_depth")},
            opset_version=17, dynamo=False,
            training=torch.onnx.TrainingMode.PRESERVE,  # keeps BatchNorm unfused, so every weight keeps its name
        )
    model = sfm.load(landmarks=landmarks)
    info = {"input_size": c.input_size, "volume_depth": c.volume_depth, "heatmap_size": c.input_size // 2,
            "num_landmarks": c.landmarks, "stacks": c.stacks, "width": c.width, "landmark_convention": landmarks,
            "mean_landmarks_3d": np.round(model.mean[model.landmarks], 3).tolist(), "licence": LICENCE, **extra, **metadata}
    path.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")


def check(net: VolumeNet, path: Path) -> float:
    """Largest absolute difference between torch and onnxruntime outputs on a random crop (an HSP
    net: its trunk graph, and each level graph on random crops)."""
    import onnxruntime

    net = net.float().eval()
    image = torch.rand(2, 3, net.config.input_size, net.config.input_size)
    runs = [(Exported(net) if not net.config.hsp_levels else ExportedTrunk(net), path, {"image": image})]
    for level, name in enumerate(level_files(path, net.config.hsp_levels), start=1):
        inputs = level_inputs(net, level, 3)
        runs.append((ExportedLevel(net, level), path.parent / name, inputs))
    worst = 0.0
    for module, file, inputs in runs:
        with torch.no_grad():
            expected = module(*inputs.values())
        expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
        session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        worst = max(worst, *(float(np.abs(a - b).max()) for a, b in zip(expected, got)))
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path, help="NAME.onnx; NAME.json is written beside it")
    args = parser.parse_args()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    net = build(CONFIGS[state["config"]])
    net.load_state_dict({k: v.float() for k, v in state["model"].items()})
    train_config = state.get("train_config", {})
    real = bool(train_config.get("real_labels"))
    metadata = {**state["metadata"], "seed": train_config.get("seed"), "batch_size": train_config.get("batch_size"),
                "data": (DATA_REAL if real else DATA_SYNTHETIC) + (DATA_ICT if train_config.get("ict_fraction") else ""), "licence": LICENCE_REAL if real else LICENCE}
    export(net, args.output, metadata, landmarks=train_config.get("landmarks", "contour"),
           threshold=train_config.get("hsp_threshold", 0.08))
    print(f"exported {args.output}; max |onnxruntime - torch| = {check(net, args.output):.2e}")


if __name__ == "__main__":
    main()
