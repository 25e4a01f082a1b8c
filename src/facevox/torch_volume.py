"""Volume stage on torch (a CUDA GPU for `facevox batch --gpus-per-worker`): the network rebuilt from
the ONNX file's own weights, with VolumeModel's interface, so `Reconstructor(network=...)` can swap it in.
Needs torch and onnx (`pip install facevox[gpu]`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facevox.volume import DEFAULT_MODEL, MODELS_DIR, NetworkOutput


def from_onnx(net, path) -> None:
    """Load a VolumeNet's weights from its exported ONNX file.

    Export folds each batch norm that follows a convolution into that convolution; such a batch norm
    is loaded as scale 1 with the folded bias, which gives the same outputs (the torch module keeps its
    layout, so training can start from it). Convolutions are matched to ONNX Conv nodes in the order
    they run; everything else is read by name (initializers 'net.<parameter>')."""
    import onnx
    import torch
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    tensors.update({n.output[0]: tensors[n.input[0]] for n in graph.node if n.op_type == "Identity" and n.input[0] in tensors})
    order = _run_order(net)
    convs = [(name, module) for name, module in order if isinstance(module, torch.nn.Conv2d)]
    nodes = [n for n in graph.node if n.op_type == "Conv"]
    if len(nodes) != len(convs):
        raise ValueError(f"{path} has {len(nodes)} convolutions; this network has {len(convs)}")
    state = dict(net.state_dict())
    as_tensor = lambda array: torch.from_numpy(np.array(array, dtype=np.float32))
    norms = [(name, m) for name, m in order if isinstance(m, torch.nn.BatchNorm2d)]
    folded = {name for name, _ in norms if f"net.{name}.weight" not in tensors}
    for node, (name, conv) in zip(nodes, convs):
        weight = tensors[node.input[1]]
        if tuple(weight.shape) != tuple(conv.weight.shape):
            raise ValueError(f"{path}: convolution {name} is {tuple(weight.shape)}, expected {tuple(conv.weight.shape)}")
        state[f"{name}.weight"] = as_tensor(weight)
        bias = as_tensor(tensors[node.input[2]]) if len(node.input) > 2 else torch.zeros(weight.shape[0])
        after = order[order.index((name, conv)) + 1] if (name, conv) != order[-1] else (None, None)
        if after[0] in folded:  # that batch norm was folded into this convolution: it carries the bias
            norm, module = after
            state.update({f"{norm}.weight": torch.ones_like(bias), f"{norm}.bias": bias, f"{norm}.running_mean": torch.zeros_like(bias),
                          f"{norm}.running_var": torch.full_like(bias, 1 - module.eps)})
            bias = torch.zeros_like(bias)
            folded.discard(norm)
        if conv.bias is not None:
            state[f"{name}.bias"] = bias
        elif bias.any():
            raise ValueError(f"{path}: convolution {name} has a bias this network lacks")
    if folded:
        raise ValueError(f"{path} lacks batch norms {sorted(folded)[:3]}")
    for name, _ in norms:
        if f"net.{name}.weight" in tensors:
            for key in ("weight", "bias", "running_mean", "running_var"):
                state[f"{name}.{key}"] = as_tensor(tensors[f"net.{name}.{key}"])
    net.load_state_dict(state)


def _run_order(net) -> list:
    """(name, module) of every convolution and batch norm, in the order one forward pass runs them."""
    import torch

    order, names = [], {module: name for name, module in net.named_modules()}
    hooks = [m.register_forward_hook(lambda m, i, o: order.append((names[m], m)))
             for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, net.config.input_size, net.config.input_size))
    finally:
        for hook in hooks:
            hook.remove()
    return order


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
