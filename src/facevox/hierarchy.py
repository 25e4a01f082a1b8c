"""Hierarchical volume stage (HSP, docs/hsp.md) on onnxruntime, with numpy between the levels.

The model is a trunk graph (landmark maps, level 0 and what the blocks read) and one graph per finer
level, named in its JSON (`hierarchy`, `level_files`). Level by level, the octants whose highest
boundary probability exceeds the threshold become blocks of the next level, cut out of their parents'
outputs here and run as one batch (in chunks of `chunk` blocks, to bound memory). A face's result is a
`Hierarchy`: the dense prior on level 1's grid and each level's blocks, from which come the front
depth (what the surface mesh needs), a dense volume at any level, and a mesh by marching cubes on the
finest blocks alone.

Grids: level l has G_l voxels a side; its voxel i is centred at crop coordinate (i + ½)·h − ½, h = s / G_l,
on every axis (depth too, in crop pixels, as the dense volume's k).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from facevox.face import Mesh
from facevox.landmarks import mirror_maps
from facevox.volume import NetworkOutput, model_files


def gather(values: np.ndarray, corner: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """values.flat[corner[i] + pattern] for each i: (n,) + pattern.shape, one np.take."""
    return np.take(values.reshape(-1), corner.reshape((-1,) + (1,) * pattern.ndim) + pattern)


def offsets(strides, *sizes) -> np.ndarray:
    """Flat offsets of a box of `sizes` (one per axis, from the first) in an array of these (element) strides."""
    grids = np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij")
    return sum(g * s for g, s in zip(grids, strides))


def crop3d(volume: np.ndarray, which: np.ndarray, start: np.ndarray, size) -> np.ndarray:
    """volume (B, C, D, H, W) → (n, C, a, b, c): volume[which[i], :, k:k+a, y:y+b, x:x+c] for start[i] = (k, y, x)
    and size (a, b, c) (or one int for all three)."""
    volume = np.ascontiguousarray(volume)
    strides = np.array(volume.strides) // volume.itemsize
    corner = which * strides[0] + start @ strides[2:]
    return gather(volume, corner, offsets(strides[1:], volume.shape[1], *np.broadcast_to(size, 3)))


def crop3d_children(volume: np.ndarray, which: np.ndarray, start: np.ndarray, size) -> np.ndarray:
    """`crop3d` of a volume whose voxels are stored with each parent voxel's 8 children apart
    ((B, C, 8a, a, a), facevox.hsp_net.to_children's layout), out in space. Crops that start on voxels of
    the same parity share one pattern of offsets."""
    volume = np.ascontiguousarray(volume)
    sb, sc, sd, sh, sw = np.array(volume.strides) // volume.itemsize
    a = volume.shape[-1]
    sizes = np.broadcast_to(size, 3)
    parity = start % 2
    groups = np.unique(parity, axis=0)
    out = None if len(groups) == 1 else np.empty((len(which), volume.shape[1], *sizes), volume.dtype)
    for p in groups:
        mine = (parity == p).all(1) if out is not None else slice(None)
        k, y, x = (p[axis] + np.arange(n) for axis, n in enumerate(sizes))  # voxels from the even one below the start
        plane = 4 * (k % 2)[:, None, None] + 2 * (y % 2)[None, :, None] + (x % 2)[None, None, :]
        pattern = np.arange(volume.shape[1])[:, None, None, None] * sc + (plane * a + (k // 2)[:, None, None]) * sd \
            + (y // 2)[None, :, None] * sh + (x // 2)[None, None, :] * sw
        corner = which[mine] * sb + (start[mine] // 2) @ np.array([sd, sh, sw])
        if out is None:  # one group (the runtime's crops): no copy
            return gather(volume, corner, pattern)
        out[mine] = gather(volume, corner, pattern)
    return out


def crop2d(maps: np.ndarray, which: np.ndarray, start: np.ndarray, size) -> np.ndarray:
    """maps (B, C, H, W) → (n, C, a, b): maps[which[i], :, y:y+a, x:x+b] for start[i] = (y, x) and size (a, b)
    (or one int for both)."""
    maps = np.ascontiguousarray(maps)
    strides = np.array(maps.strides) // maps.itemsize
    corner = which * strides[0] + start @ strides[2:]
    return gather(maps, corner, offsets(strides[1:], maps.shape[1], *np.broadcast_to(size, 2)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass
class Level:
    """A level's blocks of one face: origin (m, 3) of each 16³ core in the level's voxels (k, y, x) and
    the occupancy probability (m, 17, 16, 16) of the core, with the voxel in front of it in depth first."""

    origin: np.ndarray
    probability: np.ndarray


@dataclass
class Hierarchy:
    """One face's prediction: prior (G1, G1, G1), the dense head's occupancy on level 1's grid, and the
    blocks of each level from 1."""

    input_size: int
    grids: list[int]
    prior: np.ndarray
    levels: list[Level] = field(default_factory=list)

    def spacing(self, level: int) -> float:
        return self.input_size / self.grids[level]

    def voxels(self) -> list[int]:
        """Voxels predicted at each level (level 0 whole, then the blocks' cores)."""
        return [self.grids[0] ** 3] + [int(np.prod(level.probability[:, 1:].shape)) for level in self.levels]

    def fine_front_depth(self) -> tuple[np.ndarray, np.ndarray]:
        """The depth (crop pixels; +inf off the face) and mask of the visible surface on the finest
        level's lateral grid: the prior's, then at each level the shallowest 0.5 crossing of its blocks
        in each column they cover; a column whose blocks hold the coarser surface and find it empty
        leaves the face."""
        from facevox.mesh import front_depth

        index, mask = front_depth(self.prior)
        depth = (index + 0.5) * self.spacing(1) - 0.5
        for number, level in enumerate(self.levels, start=1):
            g, h = self.grids[number], self.spacing(number)
            if depth.shape[0] != g:
                factor = g // depth.shape[0]
                depth, mask = (np.repeat(np.repeat(a, factor, 0), factor, 1) for a in (depth, mask))
            if not len(level.origin):
                continue
            probability = level.probability
            full = probability[:, 1:] > 0.5
            crossed = full.any(axis=1)  # (m, 16, 16)
            first = full.argmax(axis=1)
            after = np.take_along_axis(probability[:, 1:], first[:, None], 1)[:, 0]
            before = np.minimum(np.take_along_axis(probability, first[:, None], 1)[:, 0], 0.5)
            index = first - 1 + (0.5 - before) / np.maximum(after - before, 1e-6)
            k0 = level.origin[:, 0, None, None]
            crossing = (k0 + index + 0.5) * h - 0.5
            r = np.arange(probability.shape[-1])
            column = (level.origin[:, 1, None, None] + r[:, None]) * g + level.origin[:, 2, None, None] + r
            best = np.full(g * g, np.inf)
            np.minimum.at(best, column[crossed], crossing[crossed])
            coarse = depth.ravel()[column]
            start, end = k0 * h - 0.5, (k0 + probability.shape[1] - 1) * h - 0.5
            empty = ~crossed & (coarse >= start) & (coarse < end)
            found = np.isfinite(best)
            mask = mask.ravel().copy()
            mask[column[empty]] = False
            mask = (mask | found).reshape(g, g)
            depth = np.where(found, best, depth.ravel()).reshape(g, g)
        return np.where(mask, depth, np.inf), mask

    def front_depth(self) -> tuple[np.ndarray, np.ndarray]:
        """`fine_front_depth` on the crop's pixel grid (what facevox.mesh.surface_from_depth takes): each
        crop pixel is the mean of the finer pixels around its centre that are on the face, and is on the
        face when at least half of them are."""
        depth, mask = self.fine_front_depth()
        factor = depth.shape[0] // self.input_size
        if factor == 1:
            return depth, mask
        n = self.input_size
        blocks = mask.reshape(n, factor, n, factor)
        count = blocks.sum(axis=(1, 3))
        total = np.where(mask, depth, 0.0).reshape(n, factor, n, factor).sum(axis=(1, 3))
        coarse_mask = count * 2 >= factor * factor
        return np.where(coarse_mask, total / np.maximum(count, 1), np.inf), coarse_mask

    def volume(self, level: int) -> np.ndarray:
        """(G, G, G) occupancy probability on `level`'s grid, indexed [k, y, x]: the prior, with each
        level's blocks written over it (repeated where coarser than `level`, averaged where finer)."""
        g = self.grids[level]
        ratio = g / self.grids[1]
        if ratio >= 1:
            f = int(ratio)
            volume = np.repeat(np.repeat(np.repeat(self.prior, f, 0), f, 1), f, 2).astype(np.float32)
        else:
            d = int(1 / ratio)
            volume = self.prior.reshape(g, d, g, d, g, d).mean(axis=(1, 3, 5)).astype(np.float32)
        for number, blocks in enumerate(self.levels, start=1):
            cores = blocks.probability[:, 1:]
            side = cores.shape[-1]
            if number <= level:
                f = 2 ** (level - number)
                cores = np.repeat(np.repeat(np.repeat(cores, f, 1), f, 2), f, 3) if f > 1 else cores
                origins = blocks.origin * f
            else:
                d = 2 ** (number - level)
                if d > side:
                    continue
                cores = cores.reshape(-1, side // d, d, side // d, d, side // d, d).mean(axis=(2, 4, 6))
                origins = blocks.origin // d
            span = cores.shape[-1]
            for (k, y, x), core in zip(origins, cores):
                volume[k : k + span, y : y + span, x : x + span] = core
        return volume

    def boundary_mesh(self, level: int | None = None) -> Mesh:
        """Marching cubes at 0.5 on the blocks of `level` (default the finest) alone, in crop coordinates
        (x, y, k): the surface where the network refined it, the visible face and the outline's walls."""
        from skimage.measure import marching_cubes

        level = len(self.grids) - 1 if level is None else level
        blocks = self.levels[level - 1]
        if not len(blocks.origin):
            return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
        side = blocks.probability.shape[-1]
        low, high = blocks.origin.min(0), blocks.origin.max(0) + side
        pad_low, pad_high = np.minimum(low, 1), np.minimum(self.grids[level] - high, 1)
        box = tuple(slice(a - p, b + q) for a, b, p, q in zip(low, high, pad_low, pad_high))
        volume = self.volume(level)[box]
        inside = np.zeros(volume.shape, bool)
        for k, y, x in blocks.origin - (low - pad_low):
            inside[k : k + side, y : y + side, x : x + side] = True
        if volume[inside].min() > 0.5 or volume[inside].max() < 0.5:
            return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
        vertices, triangles, _, _ = marching_cubes(volume, 0.5, mask=inside, allow_degenerate=False)
        h = self.spacing(level)
        points = (vertices + (low - pad_low) + 0.5) * h - 0.5  # (k, y, x) in crop pixels
        return Mesh(points[:, ::-1].copy(), triangles.astype(np.int64))


class HierarchicalModel:
    """A hierarchical model on onnxruntime, with facevox.volume.VolumeModel's interface: its outputs carry
    the front depth (`front`) and the face's `Hierarchy` instead of a dense volume. mirror: the landmark
    maps and the dense prior are the means of the crop's and its mirror image's (the blocks run on the
    crop alone). threshold: the octant refinement threshold (default: the model's JSON)."""

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = None, providers=None,
                 mirror: bool = True, threshold: float | None = None, chunk: int = 256):
        import onnxruntime

        self.path, self.info = model_files(path)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = providers or ["CPUExecutionProvider"]
        self.trunk = onnxruntime.InferenceSession(str(self.path), options, providers=providers)
        self.levels = [onnxruntime.InferenceSession(str(self.path.parent / name), options, providers=providers)
                       for name in self.info["level_files"]]
        spec = self.info["hierarchy"]
        self.grids, self.max_blocks = spec["grids"], spec["max_blocks"]
        self.block, self.octant, self.context, self.halo = spec["block"], spec["octant"], spec["context"], spec["halo"]
        self.threshold = spec["threshold"] if threshold is None else threshold
        self.windows = spec["windows"]
        self.input_size = int(self.info["input_size"])
        self.mirror, self.chunk = mirror, chunk

    def __call__(self, crops: np.ndarray, surface: bool = True, blocks=None) -> list[NetworkOutput]:
        """crops: (n, s, s, 3) uint8 RGB → one NetworkOutput per crop; surface=False: the landmarks' maps alone.
        blocks: the blocks to refine instead of the head's choice (`refine`)."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        n = len(crops)
        batch = crops.transpose(0, 3, 1, 2)
        if not surface:
            batch = np.ascontiguousarray(batch, dtype=np.float32) / 255.0
            heatmaps, depth = self.trunk.run(["heatmaps", "landmark_depth"], {"image": batch})
            return [NetworkOutput(None, h, d) for h, d in zip(heatmaps, depth)]
        if self.mirror:
            batch = np.concatenate([batch, batch[..., ::-1]])
        batch = np.ascontiguousarray(batch, dtype=np.float32) / 255.0
        heatmaps, depth, scores, features, prior, *images = self.trunk.run(None, {"image": batch})
        if self.mirror:
            heatmaps, depth = ((maps[:n] + mirror_maps(maps[n:])) / 2 for maps in (heatmaps, depth))
            prior = (prior[:n] + prior[n:, ..., ::-1]) / 2
            scores, features, images = scores[:n], features[:n], [image[:n] for image in images]
        hierarchies = self.refine(scores, features, prior, images, blocks)
        return [NetworkOutput(None, h, d, front=tree.front_depth(), hierarchy=tree) for h, d, tree in zip(heatmaps, depth, hierarchies)]

    def _run(self, session, inputs: dict) -> list[np.ndarray]:
        """One level's graph on every block, `chunk` blocks a call, into arrays made once."""
        count = len(next(iter(inputs.values())))
        first = session.run(None, {k: v[: max(min(self.chunk, count), 1)] if count else np.zeros((1,) + v.shape[1:], np.float32)
                                   for k, v in inputs.items()})
        if 0 < count <= self.chunk:
            return first
        outputs = [np.empty((count,) + part.shape[1:], part.dtype) for part in first]
        for i in range(0, count, self.chunk):
            parts = first if i == 0 else session.run(None, {k: v[i : i + self.chunk] for k, v in inputs.items()})
            for output, part in zip(outputs, parts):
                output[i : i + len(part)] = part
        return outputs

    def _choose(self, scores: np.ndarray, faces: int, level: int) -> np.ndarray:
        """Flat indices of the octants above the threshold, at most max_blocks a face on average (the highest)."""
        flat = scores.reshape(-1)
        chosen = np.flatnonzero(flat > self.threshold)
        limit = self.max_blocks[min(level, len(self.max_blocks)) - 1] * faces
        if len(chosen) > limit:
            chosen = chosen[np.argsort(-flat[chosen], kind="stable")[:limit]]
        return np.sort(chosen)

    def _force(self, faces: np.ndarray, origins: np.ndarray, level: int, blocks) -> np.ndarray:
        """Indices of the candidate octants (their faces and child origins) that are among `blocks`."""
        g = self.grids[level]

        def key(face, origin):
            return ((face * g + origin[:, 0]) * g + origin[:, 1]) * g + origin[:, 2]

        wanted = np.concatenate([key(np.full(len(mine[level - 1]), face), np.asarray(mine[level - 1]).reshape(-1, 3))
                                 for face, mine in enumerate(blocks)])
        return np.flatnonzero(np.isin(key(faces, origins), wanted))

    def refine(self, scores, features, prior, images, blocks=None) -> list[Hierarchy]:
        """The trunk's outputs for n faces (padded as exported) → each face's Hierarchy. blocks: for each
        face, the origins (m, 3) of the blocks to refine at each level, in place of the head's choice
        (benchmarks force a known selection, bench/hsp_cpu.py); a block whose parent is not refined is
        left out."""
        n, halo = len(scores), self.halo
        g1 = self.grids[1]
        trees = [Hierarchy(self.input_size, self.grids, sigmoid(prior[i, 0, halo : halo + g1, halo : halo + g1, halo : halo + g1]))
                 for i in range(n)]
        parent = None
        for level, session in enumerate(self.levels, start=1):
            if level == 1:
                if blocks is None:
                    chosen = self._choose(scores, n, level)
                else:
                    every = np.stack(np.unravel_index(np.arange(scores.size), scores.shape), 1)
                    chosen = self._force(every[:, 0], self.block * every[:, 1:], level, blocks)
                sample, *octant = np.unravel_index(chosen, scores.shape)
                octant = np.stack(octant, 1)
                origin = self.block * octant
                corners = {"parent_features": self.octant * octant, "prior": origin}
                sources = {"parent_features": (crop3d, features, sample), "prior": (crop3d, prior, sample)}
            else:
                if blocks is None:
                    chosen = self._choose(parent["scores"], n, level)
                else:
                    every = np.stack(np.unravel_index(np.arange(parent["scores"].size), parent["scores"].shape), 1)
                    origins = 2 * (parent["origin"][every[:, 0]] + self.octant * every[:, 1:])
                    chosen = self._force(parent["sample"][every[:, 0]], origins, level, blocks)
                source, *sub = np.unravel_index(chosen, parent["scores"].shape)
                sub = np.stack(sub, 1)
                sample = parent["sample"][source]
                origin = 2 * (parent["origin"][source] + self.octant * sub)
                corners = {"parent_features": self.octant * sub, "prior": self.octant * sub}
                sources = {"parent_features": (crop3d_children, parent["features"], source), "prior": (crop3d, parent["occupancy"], source)}
            sources["image"] = (crop2d, images[level - 1], sample)  # on the parent's lateral grid, padded as its features
            corners["image"] = origin[:, 1:] // 2
            inputs = {}
            for name, (cutter, values, which) in sources.items():  # each input's window of its crop
                offset, size = self.windows[level - 1][name]
                inputs[name] = cutter(values, which, corners[name] + np.asarray(offset), size)
            outputs = dict(zip([o.name for o in session.get_outputs()], self._run(session, inputs)))
            bounds = np.searchsorted(sample, np.arange(n + 1))  # blocks come face by face: each face's are views
            for tree, first, end in zip(trees, bounds[:-1], bounds[1:]):
                tree.levels.append(Level(origin[first:end], outputs["probability"][first:end]))
            parent = {**outputs, "sample": sample, "origin": origin}
        return trees
