"""Volume stage on torch (a CUDA GPU for `facevox batch --gpus-per-worker`): the network rebuilt from
the ONNX file's own weights, with VolumeModel's interface, so `Reconstructor(network=...)` can swap it in.
Needs torch and onnx (`pip install facevox[gpu]`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facevox.volume import DEFAULT_MODEL, MODELS_DIR, NetworkOutput


def from_onnx(net, path) -> None:
    """Load a VolumeNet's weights from its exported ONNX file: the initializers carry the state dict
    by name (prefix 'net.'; export keeps batch norms unfolded), all but BatchNorm's step counters,
    which inference does not use. Training can start again from the shipped file this way."""
    import onnx
    import torch
    from onnx import numpy_helper

    weights = {i.name.removeprefix("net."): numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    state = net.state_dict()
    wanted = [k for k in state if not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k not in weights]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} weights, e.g. {missing[:3]}")
    net.load_state_dict({**state, **{k: torch.from_numpy(weights[k].copy()).reshape(state[k].shape) for k in wanted}})


class TorchVolumeModel:
    """The shipped network on torch: same inputs, outputs and `info` as facevox.volume.VolumeModel."""

    def __init__(self, path=None, device: str = "cuda"):
        import torch

        from facevox.net import NetConfig, VolumeNet

        self.path = Path(path) if path else MODELS_DIR / f"{DEFAULT_MODEL}.onnx"
        if not self.path.exists():
            raise FileNotFoundError(f"model file {self.path} not found")
        self.info = json.loads(self.path.with_suffix(".json").read_text())
        self.input_size = int(self.info["input_size"])
        config = NetConfig(stacks=self.info["stacks"], width=self.info["width"], volume_depth=self.info["volume_depth"],
                           landmarks=self.info["num_landmarks"], input_size=self.input_size)
        self.net = VolumeNet(config)
        from_onnx(self.net, self.path)
        self.device = torch.device(device)
        self.net = self.net.to(self.device).eval()
        self._torch = torch

    def __call__(self, crops: np.ndarray) -> list[NetworkOutput]:
        """crops: (n, s, s, 3) uint8 RGB → one NetworkOutput per crop."""
        torch = self._torch
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
            volume, heatmaps, depth = self.net(batch)
            volume, heatmaps, depth = (t.float().cpu().numpy() for t in (torch.sigmoid(volume), heatmaps, depth))
        return [NetworkOutput(v, h, d) for v, h, d in zip(volume, heatmaps, depth)]
