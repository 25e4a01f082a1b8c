"""Volume stage on torch (a CUDA GPU for `facevox batch --device cuda` or `--gpus-per-worker`): the
network rebuilt from the ONNX file's own weights, with VolumeModel's interface, so
`Reconstructor(network=...)` can swap it in; a hierarchical model (docs/hsp.md) as TorchHierarchicalModel,
`torch_network` choosing by the model's JSON. Needs torch and onnx (`pip install facevox[gpu]`)."""

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


def torch_network(path=None, device: str = "cuda", precision: str | None = None, mirror: bool = True):
    """The torch volume stage for a model file, as facevox.volume.load_network chooses the CPU one:
    TorchHierarchicalModel for a hierarchical model (its JSON has `hierarchy`), else TorchVolumeModel."""
    path, info = model_files(path)
    model = TorchHierarchicalModel if "hierarchy" in info else TorchVolumeModel
    return model(path, device=device, precision=precision, mirror=mirror)


def to_device(net, device, precision: str):
    """net on `device` in `precision` (eval mode); below fp32, its 2D convolutions' weights channels-last
    (tensor cores). → (net, dtype, the 2D activations' memory format)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    memory_format = torch.contiguous_format if precision == "fp32" else torch.channels_last
    net = net.to(device, dtype).eval()
    for parameter in net.parameters():
        if parameter.dim() == 4:
            parameter.data = parameter.data.contiguous(memory_format=memory_format)
    return net, dtype, memory_format


def prepare(crops, device, dtype, memory_format):
    """(n, s, s, 3) uint8 crops (an array or a host tensor) → (n, 3, s, s) in [0, 1] on the device."""
    import torch

    crops = crops if isinstance(crops, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(crops))
    batch = crops.to(device, non_blocking=True).permute(0, 3, 1, 2).to(dtype) / 255.0
    return batch.contiguous(memory_format=memory_format)


class TorchVolumeModel:
    """The shipped network on torch: same inputs, outputs and `info` as facevox.volume.VolumeModel (mirror
    too). precision: "fp32", or the whole network in "fp16" / "bf16" (channels-last layout, for tensor
    cores); None: default_precision(device). Outputs are float32 either way (bench/network_formats.py measures what each costs and changes)."""

    def __init__(self, path=None, device: str = "cuda", precision: str | None = None, mirror: bool = True):
        import torch

        from facevox.net import NetConfig, VolumeNet

        self.path, self.info = model_files(path)
        if "hierarchy" in self.info:
            raise ValueError(f"{self.path.name} is a hierarchical model: load it with torch_network (TorchHierarchicalModel)")
        self.input_size = int(self.info["input_size"])
        config = NetConfig(stacks=self.info["stacks"], width=self.info["width"], volume_depth=self.info["volume_depth"],
                           landmarks=self.info["num_landmarks"], input_size=self.input_size)
        self.net = VolumeNet(config)
        from_onnx(self.net, self.path)
        self.device = torch.device(device)
        self.precision = precision or default_precision(self.device)
        self.net, self.dtype, self.memory_format = to_device(self.net, self.device, self.precision)
        self.mirror = mirror
        self._torch = torch

    def forward(self, crops, surface=True):
        """crops: (n, s, s, 3) uint8 RGB (an array, or a host tensor) → the volume (occupancy in [0, 1]) of the
        rows where `surface` (True, False or a bool per row; None if no row), and the heatmaps and landmark
        depths of every row: float32 tensors on the device. Call it under torch.inference_mode()."""
        torch = self._torch
        batch = prepare(crops, self.device, self.dtype, self.memory_format)
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

    def front_depth(self, volume):
        """forward's volume → its front depth and mask on the device (`front_depth`)."""
        return front_depth(volume)

    def dense_volume(self, volume):
        """forward's volume → the (n, D, s, s) occupancy a solid is made from: itself."""
        return volume

    def __call__(self, crops: np.ndarray, surface: bool = True) -> list[NetworkOutput]:
        """crops: (n, s, s, 3) uint8 RGB → one NetworkOutput per crop, with its landmarks found on the device;
        surface=False: the landmarks alone."""
        def outputs(volume, heatmaps, depth, points):
            volume, heatmaps, depth = (t.cpu().numpy() for t in (volume, heatmaps, depth))
            return [NetworkOutput(v, h, d, points=p) for v, h, d, p in zip(volume, heatmaps, depth, points)]

        return run_on_device(self, crops, surface, outputs)


def run_on_device(model, crops: np.ndarray, surface: bool, outputs) -> list[NetworkOutput]:
    """A torch model's __call__: crops (n, s, s, 3) or one crop through model.forward, the landmarks found
    on the device; surface=False: NetworkOutputs of the landmarks and their evidence alone, else
    outputs(forward's result, heatmaps, depth, points), still inside inference mode."""
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    with model._torch.inference_mode():
        result, heatmaps, depth = model.forward(crops, surface)
        points = landmarks_from_heatmaps(heatmaps, depth, model.input_size).cpu().numpy().astype(np.float64)
        if not surface:
            evidence = evidence_of(heatmaps).cpu().numpy()
            return [NetworkOutput(None, None, None, points=p, face_evidence=float(e)) for p, e in zip(points, evidence)]
        return outputs(result, heatmaps, depth, points)


class TorchHierarchy:
    """A batch's hierarchical prediction on the device (facevox.hierarchy.Hierarchy's, for n faces at once):
    prior (n, G1, G1, G1) occupancy on level 1's grid and, for each level from 1, its blocks of all faces
    in face order: sample (m,), origin (m, 3) in the level's voxels (k, y, x), probability (m, 17, 16, 16)."""

    def __init__(self, input_size: int, grids: list[int], prior, levels: list[tuple]):
        self.input_size, self.grids, self.prior, self.levels = input_size, grids, prior, levels

    def trees(self) -> list:
        """One facevox.hierarchy.Hierarchy (numpy) per face."""
        from facevox.hierarchy import Hierarchy, Level

        prior = self.prior.float().cpu().numpy()
        trees = [Hierarchy(self.input_size, self.grids, p) for p in prior]
        for sample, origin, probability in self.levels:
            bounds = np.searchsorted(sample.cpu().numpy(), np.arange(len(trees) + 1))
            origin, probability = origin.cpu().numpy(), probability.float().cpu().numpy()
            for tree, first, end in zip(trees, bounds[:-1], bounds[1:]):
                tree.levels.append(Level(origin[first:end], probability[first:end]))
        return trees

    def front_depth(self):
        """Hierarchy.front_depth for every face, on the device: depth (n, s, s) in crop pixels (+inf off the
        face) and mask (n, s, s), by the same rule (the prior's, then each level's shallowest 0.5 crossing
        in the columns its blocks cover, then the finest map brought to the crop's pixels)."""
        import torch

        n = len(self.prior)
        index, mask = front_depth(self.prior)
        depth = (index + 0.5) * (self.input_size / self.grids[1]) - 0.5
        for number, (sample, origin, probability) in enumerate(self.levels, start=1):
            g, h = self.grids[number], self.input_size / self.grids[number]
            factor = g // depth.shape[1]
            depth, mask = (a.repeat_interleave(factor, 1).repeat_interleave(factor, 2) for a in (depth, mask))
            if not len(origin):
                continue
            probability = probability.float()
            full = probability[:, 1:] > 0.5
            crossed = full.any(dim=1)
            first = full.to(torch.uint8).argmax(dim=1, keepdim=True)
            after = probability[:, 1:].gather(1, first)[:, 0]
            before = probability.gather(1, first)[:, 0].clamp_max(0.5)
            index = first[:, 0] - 1 + (0.5 - before) / (after - before).clamp_min(1e-6)
            k0 = origin[:, 0, None, None]
            crossing = (k0 + index + 0.5) * h - 0.5
            r = torch.arange(probability.shape[-1], device=origin.device)
            column = (sample[:, None, None] * g + origin[:, 1, None, None] + r[:, None]) * g + origin[:, 2, None, None] + r
            best = torch.full((n * g * g,), float("inf"), device=depth.device)
            best.scatter_reduce_(0, column[crossed], crossing[crossed].to(best.dtype), "amin")
            coarse = depth.reshape(-1)[column]
            start, end = k0 * h - 0.5, (k0 + probability.shape[1] - 1) * h - 0.5
            empty = ~crossed & (coarse >= start) & (coarse < end)
            found = torch.isfinite(best)
            mask = mask.reshape(-1).clone()
            mask[column[empty]] = False
            mask = (mask | found).reshape(n, g, g)
            depth = torch.where(found, best, depth.reshape(-1)).reshape(n, g, g)
        depth = torch.where(mask, depth, torch.full_like(depth, float("inf")))
        factor = depth.shape[1] // self.input_size
        if factor == 1:
            return depth, mask
        s = self.input_size
        count = mask.reshape(n, s, factor, s, factor).sum(dim=(2, 4))
        total = torch.where(mask, depth, torch.zeros_like(depth)).reshape(n, s, factor, s, factor).sum(dim=(2, 4))
        coarse_mask = count * 2 >= factor * factor
        return torch.where(coarse_mask, total / count.clamp_min(1), torch.full_like(total, float("inf"))), coarse_mask

    def volume(self, level: int):
        """Hierarchy.volume for every face, on the device: (n, G, G, G) occupancy on `level`'s grid, the
        prior with each level's blocks written over it (repeated where coarser, averaged where finer)."""
        import torch
        import torch.nn.functional as F

        g = self.grids[level]
        ratio = g / self.grids[1]
        prior = self.prior.float()
        if ratio >= 1:
            f = int(ratio)
            volume = prior.repeat_interleave(f, 1).repeat_interleave(f, 2).repeat_interleave(f, 3)
        else:
            volume = F.avg_pool3d(prior[:, None], int(1 / ratio))[:, 0]
        volume = volume.contiguous()
        for number, (sample, origin, probability) in enumerate(self.levels, start=1):
            cores = probability[:, 1:].float()
            side = cores.shape[-1]
            if number <= level:
                f = 2 ** (level - number)
                cores = cores.repeat_interleave(f, 1).repeat_interleave(f, 2).repeat_interleave(f, 3)
                origins = origin * f
            else:
                d = 2 ** (number - level)
                if d > side:
                    continue
                cores = F.avg_pool3d(cores[:, None], d)[:, 0]
                origins = origin // d
            if not len(origins):
                continue
            r = torch.arange(cores.shape[-1], device=origin.device)
            k, y, x = ((origins[:, axis, None] + r) for axis in range(3))
            volume[sample[:, None, None, None], k[:, :, None, None], y[:, None, :, None], x[:, None, None, :]] = cores
        return volume


class TorchHierarchicalModel:
    """A hierarchical model (docs/hsp.md) on torch, with TorchVolumeModel's interface: the trunk, level 0
    and each level's blocks of all faces of a call batched (a level's blocks in chunks of `chunk`), the
    blocks chosen on the device by facevox.hierarchy.HierarchicalModel's rule (the octants whose highest
    boundary probability exceeds the threshold, at most max_blocks a face on average, the highest scores
    first). Its outputs carry what the onnxruntime runtime's do: the front depth and the face's
    Hierarchy. mirror: the landmark maps and the dense prior are the means of the crop's and its mirror
    image's (the blocks run on the crop alone), as there."""

    def __init__(self, path=None, device: str = "cuda", precision: str | None = None, mirror: bool = True,
                 threshold: float | None = None, chunk: int = 4096):
        import torch

        from facevox.hsp_net import CROP, windows
        from facevox.net import NetConfig, build

        self.path, self.info = model_files(path)
        spec = self.info["hierarchy"]
        # Levels with a 3×3×3 convolution read the whole CROP³ of their parent's features: the JSON's windows tell.
        spatial = sum(w["parent_features"][1] == [CROP] * 3 for w in spec["windows"])
        self.input_size = int(self.info["input_size"])
        config = NetConfig(stacks=self.info["stacks"], width=self.info["width"], volume_depth=self.info["volume_depth"],
                           landmarks=self.info["num_landmarks"], input_size=self.input_size, hsp_levels=self.info["hsp_levels"],
                           hsp_channels=self.info["hsp_channels"], hsp_spatial=spatial)
        net = build(config)
        if [{k: [list(v) for v in w] for k, w in windows(head).items()} for head in net.levels] != spec["windows"]:
            raise ValueError(f"{self.path.name}: its level graphs are not the ones this version of facevox.hsp_net builds")
        from_onnx(net, self.path)
        self.device = torch.device(device)
        self.precision = precision or default_precision(self.device)
        self.net, self.dtype, self.memory_format = to_device(net, self.device, self.precision)
        self.grids, self.max_blocks = spec["grids"], spec["max_blocks"]
        self.threshold = spec["threshold"] if threshold is None else threshold
        self.mirror, self.chunk = mirror, chunk
        self._torch = torch

    def forward(self, crops, surface=True):
        """crops: (n, s, s, 3) uint8 RGB → the TorchHierarchy of the rows where `surface` (True, False or a
        bool per row; None if no row), and the heatmaps and landmark depths of every row (float32, on the
        device). Call it under torch.inference_mode()."""
        torch = self._torch
        batch = prepare(crops, self.device, self.dtype, self.memory_format)
        n = len(batch)
        rows = torch.from_numpy(np.flatnonzero(np.broadcast_to(surface, n))).to(self.device)
        if self.mirror and len(rows):
            batch = torch.cat([batch, batch[rows].flip(-1)]).contiguous(memory_format=self.memory_format)
        decoded = self.net.trunk(batch)
        heatmaps, depth = (maps.float() for maps in self.net.landmark_maps(decoded))
        if not len(rows):
            return None, heatmaps, depth
        coarse = self.net.coarse(decoded[rows] if len(rows) < n else decoded[:n])
        prior = coarse.prior
        if self.mirror:
            prior = (prior + self.net.prior_logits(decoded[n:]).flip(-1)) / 2
            for maps in (heatmaps, depth):
                maps[rows] = (maps[rows] + mirror_maps(maps[n:])) / 2
        return self.refine(coarse.classes, coarse.features, prior, coarse.images), heatmaps[:n], depth[:n]

    def _choose(self, scores, faces: int, level: int):
        """Flat indices (ascending) of the octants above the threshold, at most max_blocks a face on average
        (the highest; equal scores in index order): HierarchicalModel._choose on the device."""
        torch = self._torch
        flat = scores.reshape(-1)
        chosen = torch.nonzero(flat > self.threshold)[:, 0]
        limit = self.max_blocks[min(level, len(self.max_blocks)) - 1] * faces
        if len(chosen) > limit:
            chosen = chosen[torch.sort(flat[chosen], descending=True, stable=True).indices[:limit]].sort().values
        return chosen

    def refine(self, classes, features, prior, images) -> TorchHierarchy:
        """Level 0's class logits and features, the prior logits (n, 1, G1³) and the image features of n faces
        (HSPNet.coarse's, unpadded) → their TorchHierarchy."""
        import torch
        import torch.nn.functional as F

        from facevox.hsp_net import BLOCK, CONTEXT, HALO, OCTANT, boundary_probability, crop2d, crop3d, level_outputs, octant_max, windows

        n = len(classes)
        scores = octant_max(boundary_probability(classes.float()))
        features = F.pad(features, (CONTEXT,) * 6)
        padded_prior = F.pad(prior, (HALO,) * 6, mode="replicate")
        images = [F.pad(image, (CONTEXT,) * 4) for image in images]
        levels, parent = [], None
        for level, head in enumerate(self.net.levels, start=1):
            chosen = self._choose(scores, n, level)
            which, *octant = torch.unravel_index(chosen, scores.shape)
            octant = torch.stack(octant, 1)
            if level == 1:
                sample, origin = which, BLOCK * octant
                sources = {"parent_features": (features, which, OCTANT * octant, False), "prior": (padded_prior, which, origin, False)}
            else:
                sample, origin = parent["sample"][which], 2 * (parent["origin"][which] + OCTANT * octant)
                sources = {"parent_features": (parent["features"], which, OCTANT * octant, True),
                           "prior": (parent["occupancy"], which, OCTANT * octant, False)}
            window = windows(head)
            outputs = []
            for i in range(0, max(len(chosen), 1), self.chunk):
                part = slice(i, i + self.chunk)
                inputs = [crop3d(values, source[part], start[part] + torch.tensor(window[name][0], device=self.device), window[name][1],
                                 children).to(self.dtype) for name, (values, source, start, children) in sources.items()]
                (offset, size) = window["image"]
                inputs.append(crop2d(images[level - 1], sample[part], origin[part, 1:] // 2 + torch.tensor(offset, device=self.device),
                                     size).to(self.dtype))
                outputs.append(level_outputs(head, *inputs))
            outputs = [torch.cat(parts) for parts in zip(*outputs)]
            levels.append((sample, origin, outputs[-1]))
            if level < len(self.net.levels):
                parent = {"sample": sample, "origin": origin, "features": outputs[0], "occupancy": outputs[1]}
                scores = outputs[2]
        return TorchHierarchy(self.input_size, self.grids, torch.sigmoid(prior[:, 0]), levels)

    def front_depth(self, tree: TorchHierarchy):
        """forward's TorchHierarchy → the front depth and mask on the crop's pixels (n, s, s), on the device."""
        return tree.front_depth()

    def dense_volume(self, tree: TorchHierarchy):
        """forward's TorchHierarchy → the occupancy on the crop's grid (n, s, s, s) a solid is made from
        (NetworkOutput.dense_volume's)."""
        return tree.volume(self.grids.index(self.input_size))

    def __call__(self, crops: np.ndarray, surface: bool = True) -> list[NetworkOutput]:
        """crops: (n, s, s, 3) uint8 RGB → one NetworkOutput per crop, as facevox.hierarchy.HierarchicalModel's
        (front depth and Hierarchy; the front depth made on the device), with its landmarks found on the
        device; surface=False: the landmarks alone."""
        def outputs(tree, heatmaps, depth, points):
            front, mask = (t.cpu().numpy() for t in tree.front_depth())
            heatmaps, depth = heatmaps.cpu().numpy(), depth.cpu().numpy()
            return [NetworkOutput(None, h, d, front=(f.astype(np.float64), m), points=p, hierarchy=t)
                    for h, d, f, m, p, t in zip(heatmaps, depth, front, mask, points, tree.trees())]

        return run_on_device(self, crops, surface, outputs)
