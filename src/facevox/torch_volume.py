"""Volume stage on torch (a CUDA GPU for `facevox batch --device cuda` or `--gpus-per-worker`): the
network rebuilt from the ONNX file's own weights, with VolumeModel's interface, so
`Reconstructor(network=...)` can swap it in. Needs torch and onnx (`pip install facevox[gpu]`)."""

from __future__ import annotations

import numpy as np

from facevox.landmarks import mirror_maps
from facevox.volume import NetworkOutput, model_files


def from_onnx(net, path, partial: bool = False) -> list[str]:
    """Load a VolumeNet's weights from its exported ONNX file: the initializers carry the state dict
    by name (prefix 'net.'; export keeps batch norms unfolded), all but BatchNorm's step counters,
    which inference does not use. Training can start again from the shipped file this way. A
    hierarchical model's level graphs (its JSON's `level_files`, beside it) are read too. partial: load
    what the file has (a dense model's file into an HSPNet) and return the names it lacks, else raise."""
    import json
    from pathlib import Path

    import onnx
    import torch
    from onnx import numpy_helper

    path = Path(path)
    info = path.with_suffix(".json")
    files = [path] + [path.parent / name for name in (json.loads(info.read_text()).get("level_files", []) if info.exists() else [])]
    weights = {i.name.removeprefix("net."): numpy_helper.to_array(i) for f in files for i in onnx.load(str(f)).graph.initializer}
    state = net.state_dict()
    wanted = [k for k in state if not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k not in weights]
    if missing and not partial:
        raise ValueError(f"{path} lacks {len(missing)} weights, e.g. {missing[:3]}")
    net.load_state_dict({**state, **{k: torch.from_numpy(weights[k].copy()).reshape(state[k].shape) for k in wanted if k in weights}})
    return missing


def front_depth(volume, level: float = 0.5):
    """facevox.mesh.front_depth on a batch of torch volumes (n, D, h, w), on their device: the depth
    (n, h, w) where each column first crosses `level`, linearly interpolated (+inf off the face), and
    the mask (n, h, w) of columns with a voxel above `level`."""
    import torch

    full = volume > level
    mask = full.any(dim=1)
    k = full.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first voxel above level
    after = volume.gather(1, k)
    before = torch.where(k > 0, volume.gather(1, (k - 1).clamp_min(0)), torch.zeros_like(after))
    depth = (k - 1 + (level - before) / (after - before)).squeeze(1)
    return torch.where(mask, depth, torch.full_like(depth, float("inf"))), mask


def evidence_of(heatmaps):
    """(n, 68, H, H) heatmaps on the device → (n,) facevox.landmarks.face_evidence, by the same rule."""
    return heatmaps.float().flatten(2).amax(2).mean(1)


def landmarks_from_heatmaps(heatmaps, landmark_depth, input_size: int):
    """facevox.landmarks.from_heatmaps on a batch of torch heatmaps and depth maps (n, 68, H, H), on their
    device → (n, 68, 3) float32 points (x, y, k) in crop pixels, by the same rule and cell convention."""
    import torch
    import torch.nn.functional as F

    size = heatmaps.shape[-1]
    stride = input_size / size
    peak = heatmaps.flatten(2).argmax(dim=2)  # (n, 68), the first maximum as numpy's argmax
    i, j = peak // size, peak % size
    offsets = torch.arange(-1, 2, device=heatmaps.device)
    di, dj = offsets.repeat_interleave(3), offsets.repeat(3)  # the 3×3 neighbourhood, row by row
    padded = F.pad(heatmaps.clamp_min(0), (1, 1, 1, 1)).flatten(2)  # cells beyond the border weigh 0
    weights = padded.gather(2, (i[..., None] + 1 + di) * (size + 2) + j[..., None] + 1 + dj)
    total = weights.sum(dim=2)
    ci = torch.where(total > 0, i + (weights * di).sum(dim=2) / total, i)
    cj = torch.where(total > 0, j + (weights * dj).sum(dim=2) / total, j)
    depth = landmark_depth.flatten(2).gather(2, peak[..., None]).squeeze(2)
    return torch.stack([stride * cj + (stride - 1) / 2, stride * ci + (stride - 1) / 2, depth], dim=2)


PRECISIONS = ("fp32", "fp16", "bf16")


def default_precision(device) -> str:
    """fp16 on a CUDA device, fp32 elsewhere. On an H100, fp16 gave the synthetic benchmark's figures of
    fp32 (and of the ONNX model on the CPU) to within 0.0005 % IOD and ran 662 against 547 faces/s end to
    end (bench/results/accuracy_synthetic_torch_*.json, bench/results/gpu_h100/)."""
    return "fp16" if str(device).startswith("cuda") else "fp32"


class TorchVolumeModel:
    """The shipped network on torch: same inputs, outputs and `info` as facevox.volume.VolumeModel (mirror
    too). precision: "fp32", or the whole network in "fp16" / "bf16" (channels-last layout, for tensor
    cores); None: default_precision(device). Outputs are float32 either way (bench/network_formats.py measures what each costs and changes)."""

    def __init__(self, path=None, device: str = "cuda", precision: str | None = None, mirror: bool = True):
        import torch

        from facevox.net import NetConfig, VolumeNet

        self.path, self.info = model_files(path)
        if "hierarchy" in self.info:
            raise ValueError(f"{self.path.name} is a hierarchical model: it runs on onnxruntime (facevox.hierarchy), not here yet")
        self.input_size = int(self.info["input_size"])
        config = NetConfig(stacks=self.info["stacks"], width=self.info["width"], volume_depth=self.info["volume_depth"],
                           landmarks=self.info["num_landmarks"], input_size=self.input_size)
        self.net = VolumeNet(config)
        from_onnx(self.net, self.path)
        self.device = torch.device(device)
        precision = precision or default_precision(self.device)
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
        self.precision = precision
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.memory_format = torch.contiguous_format if precision == "fp32" else torch.channels_last
        self.net = self.net.to(self.device, self.dtype, memory_format=self.memory_format).eval()
        self.mirror = mirror
        self._torch = torch

    def forward(self, crops, surface=True):
        """crops: (n, s, s, 3) uint8 RGB (an array, or a host tensor) → the volume (occupancy in [0, 1]) of the
        rows where `surface` (True, False or a bool per row; None if no row), and the heatmaps and landmark
        depths of every row: float32 tensors on the device. Call it under torch.inference_mode()."""
        torch = self._torch
        crops = crops if isinstance(crops, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(crops))
        batch = crops.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(self.dtype) / 255.0
        batch = batch.contiguous(memory_format=self.memory_format)
        n = len(batch)
        rows = torch.from_numpy(np.flatnonzero(np.broadcast_to(surface, n))).to(self.device)
        if self.mirror and len(rows):  # the rows that want the volume, mirrored, go through the trunk too
            batch = torch.cat([batch, batch[rows].flip(-1)]).contiguous(memory_format=self.memory_format)
        decoded = self.net.trunk(batch)
        heatmaps, depth = (maps.float() for maps in self.net.landmark_maps(decoded))
        if not len(rows):
            return None, heatmaps, depth
        volume = torch.sigmoid(self.net.volume_logits(decoded[rows] if len(rows) < n else decoded[:n]).float())
        if self.mirror:
            volume = (volume + torch.sigmoid(self.net.volume_logits(decoded[n:]).float()).flip(-1)) / 2
            for maps in (heatmaps, depth):
                maps[rows] = (maps[rows] + mirror_maps(maps[n:])) / 2
        return volume, heatmaps[:n], depth[:n]

    def __call__(self, crops: np.ndarray, surface: bool = True) -> list[NetworkOutput]:
        """crops: (n, s, s, 3) uint8 RGB → one NetworkOutput per crop, with its landmarks found on the device;
        surface=False: the landmarks alone."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        with self._torch.inference_mode():
            volume, heatmaps, depth = self.forward(crops, surface)
            points = landmarks_from_heatmaps(heatmaps, depth, self.input_size).cpu().numpy().astype(np.float64)
            if not surface:
                evidence = evidence_of(heatmaps).cpu().numpy()
                return [NetworkOutput(None, None, None, points=p, face_evidence=float(e)) for p, e in zip(points, evidence)]
            volume, heatmaps, depth = (t.cpu().numpy() for t in (volume, heatmaps, depth))
        return [NetworkOutput(v, h, d, points=p) for v, h, d, p in zip(volume, heatmaps, depth, points)]
