"""Export a trained VolumeNet to the runtime's ONNX contract (docs/architecture.md) + its JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from training import sfm
from facevox.net import CONFIGS, VolumeNet

LICENCE = ("Non-commercial use only: trained on shapes of the Surrey Face Model (non-commercial licence) "
           "rendered with background clutter from web-collected photos.")
LICENCE_REAL = ("Non-commercial use only: trained on shapes of the Surrey Face Model (non-commercial licence), "
                "web-collected photos and CelebA-derived face crops (non-commercial research use).")
DATA_SYNTHETIC = "synthetic Surrey Face Model renders (training/sources/synthetic.py)"
DATA_REAL = (DATA_SYNTHETIC + " mixed with real photos (real-faces, celeb-faces) carrying fitted Surrey labels, "
             "as photographed and profiled (training/sources/real.py)")


class Exported(torch.nn.Module):
    """The network as the runtime sees it: occupancy probabilities instead of logits."""

    def __init__(self, net: VolumeNet):
        super().__init__()
        self.net = net

    def forward(self, image):
        volume, heatmaps, landmark_depth = self.net(image)
        return torch.sigmoid(volume), heatmaps, landmark_depth


def export(net: VolumeNet, path: Path, metadata: dict, landmarks: str = "contour") -> None:
    """Write the ONNX file and its JSON; `landmarks`: the training run's landmark convention (training.sfm.load)."""
    net = net.float().eval()
    size = net.config.input_size
    torch.onnx.export(
        Exported(net), torch.rand(1, 3, size, size), str(path), input_names=["image"],
        output_names=["volume", "heatmaps", "landmark_depth"],
        dynamic_axes={name: {0: "batch"} for name in ("image", "volume", "heatmaps", "landmark_depth")},
        opset_version=17, dynamo=False,
        training=torch.onnx.TrainingMode.PRESERVE,  # keeps BatchNorm unfused, so every weight keeps its name
    )
    c = net.config
    model = sfm.load(landmarks=landmarks)
    info = {"input_size": c.input_size, "volume_depth": c.volume_depth, "heatmap_size": c.input_size // 2,
            "num_landmarks": c.landmarks, "stacks": c.stacks, "width": c.width, "landmark_convention": landmarks,
            "mean_landmarks_3d": np.round(model.mean[model.landmarks], 3).tolist(), "licence": LICENCE, **metadata}
    path.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")


def check(net: VolumeNet, path: Path) -> float:
    """Largest absolute difference between torch and onnxruntime outputs on a random crop."""
    import onnxruntime

    image = torch.rand(2, 3, net.config.input_size, net.config.input_size)
    with torch.no_grad():
        expected = [t.numpy() for t in Exported(net.float().eval())(image)]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": image.numpy()})
    return float(max(np.abs(a - b).max() for a, b in zip(expected, got)))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path, help="NAME.onnx; NAME.json is written beside it")
    args = parser.parse_args()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    net = VolumeNet(CONFIGS[state["config"]])
    net.load_state_dict({k: v.float() for k, v in state["model"].items()})
    train_config = state.get("train_config", {})
    real = bool(train_config.get("real_labels"))
    metadata = {**state["metadata"], "seed": train_config.get("seed"), "batch_size": train_config.get("batch_size"),
                "data": DATA_REAL if real else DATA_SYNTHETIC, "licence": LICENCE_REAL if real else LICENCE}
    export(net, args.output, metadata, landmarks=train_config.get("landmarks", "contour"))
    print(f"exported {args.output}; max |onnxruntime - torch| = {check(net, args.output):.2e}")


if __name__ == "__main__":
    main()
