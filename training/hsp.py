"""Training the hierarchical head (facevox.hsp_net): per-level targets from the depth map, HSP's losses,
and a held-out check. train.py calls `hierarchy_losses` and `evaluate_hierarchy` for an HSP net.

Targets are made on the training device from the batch's depth map and mask alone. The finest level
(384² for the 192 crop) reads the depth map bilinearly upsampled to its lateral grid (pixels off the
face beside it take their deepest face neighbour's depth first, so the outline stays finite) and the
mask repeated 2×2; a column is full from its depth to the back, as `training.voxels.occupancy`.
Each level's voxel is *free* when no column of it has its surface before the voxel's back, *occupied*
when every column is on the face with its surface at or before the voxel's front, else *boundary*,
all over the voxel grown by one finest voxel each way (so that a finest voxel on the surface beside a
coarse voxel's face still makes it boundary: HSP's 26-neighbour rule). These come from min/max-pooled
2D maps, never from a full 384³ volume.

Which surface is boundary (`--hsp-boundary`): "front" (the default) counts only the visible surface
(with its steps at self-occlusions): a voxel is boundary when the depths of the face's columns in it
span part of its depth, and a voxel beside the outline, behind the surface, is occupied however few
of its columns are on the face; "all" is HSP's rule on the whole volume, whose boundary then includes
the walls that the outline drops to the back of the grid (about half of the finest level's
boundary voxels on renders), which the product's meshes never use.

Expansion in training: a level's blocks are the octants above it that hold true boundary or that the
network scores above the threshold, thinned at random to `hsp_blocks` per level and batch, and filled
up to that number with other octants (so shapes stay fixed for cuDNN and the head sees empty octants
too). The losses are means over the kept blocks' voxels: 3-class cross-entropy at level 0 (every
voxel) and inner levels, binary cross-entropy against the soft occupancy at every level from 1 (the
last is HSP's binary occupancy; inner ones keep the occupancy their children's prior is made from).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facevox.hsp_net import BLOCK, BOUNDARY, FREE, MAX_BLOCKS, OCCUPIED, HSPNet, crop2d, octant_max


class HierarchyTargets:
    """Per-level labels and soft occupancy of a batch, read per block from 2D maps."""

    def __init__(self, depth: torch.Tensor, mask: torch.Tensor, grids: list[int], input_size: int, walls: bool = False):
        fine = grids[-1]
        scale = fine // input_size
        beside = F.max_pool2d(torch.where(mask, depth, -torch.inf)[:, None], 3, 1, 1)[:, 0]
        filled = torch.where(mask, depth, torch.where(torch.isfinite(beside), beside, 0.0))
        self.size, self.grids = input_size, grids
        self.fine_depth = F.interpolate(filled[:, None], scale_factor=scale, mode="bilinear", align_corners=False)[:, 0]
        self.fine_mask = mask.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        self.margin = input_size / fine  # one finest voxel, in crop pixels
        surface = torch.where(self.fine_mask, self.fine_depth, torch.inf)[:, None]  # +inf: nothing full in the column
        nearest = -F.max_pool2d(-surface, 3, 1, 1)  # grown by one finest pixel
        # walls: a column off the face counts as a surface at +inf (the outline's walls down to the back are
        # boundary, as in HSP); else it is left out (only the visible surface is boundary)
        farthest = F.max_pool2d(surface if walls else torch.where(self.fine_mask, self.fine_depth, -torch.inf)[:, None], 3, 1, 1)
        self.nearest, self.farthest, self.depth, self.mask = [], [], [], []
        for g in grids:
            r = fine // g
            self.nearest.append(-F.max_pool2d(-nearest, r))
            self.farthest.append(F.max_pool2d(farthest, r))
            self.depth.append(F.avg_pool2d(self.fine_depth[:, None], r))
            self.mask.append(F.avg_pool2d(self.fine_mask[:, None].float(), r) > 0.5)

    def _window(self, maps: torch.Tensor, sample, origin, size):
        return crop2d(maps, sample, origin[:, 1:], size)[:, 0, None]  # (n, 1, size, size)

    def _depths(self, level: int, origin, size):
        h = self.size / self.grids[level]
        i = origin[:, 0, None] + torch.arange(size, device=origin.device)
        return (i * h - 0.5)[:, :, None, None], h  # the voxels' front faces (n, size, 1, 1), crop pixels

    def labels(self, level: int, sample, origin, size: int = BLOCK) -> torch.Tensor:
        """(n, size, size, size) FREE / BOUNDARY / OCCUPIED of the blocks with these corners."""
        front, h = self._depths(level, origin, size)
        nearest = self._window(self.nearest[level], sample, origin, size)
        farthest = self._window(self.farthest[level], sample, origin, size)
        occupied = (farthest <= front - self.margin) & torch.isfinite(nearest)  # behind the surface of every face column, and one there
        free = nearest >= front + h + self.margin
        return torch.where(occupied, OCCUPIED, torch.where(free, FREE, BOUNDARY))

    def occupancy(self, level: int, sample, origin, size: int = BLOCK) -> torch.Tensor:
        """(n, size, size, size) share of each voxel's depth behind the surface (the dense target's rule)."""
        front, h = self._depths(level, origin, size)
        depth = self._window(self.depth[level], sample, origin, size)
        mask = self._window(self.mask[level], sample, origin, size)
        return torch.where(mask, ((front + h - depth) / h).clamp(0, 1), 0.0)

    def all_labels(self, level: int) -> torch.Tensor:
        """(b, G, G, G) labels of a whole level (for level 0)."""
        b, g = self.fine_depth.shape[0], self.grids[level]
        zero = torch.zeros(b, 3, dtype=torch.long, device=self.fine_depth.device)
        return self.labels(level, torch.arange(b, device=zero.device), zero, g)

    def boundary_voxels(self, level: int) -> torch.Tensor:
        """How many of a level's voxels are boundary, for each sample (b,), from the maps alone."""
        g, h = self.grids[level], self.size / self.grids[level]
        lo, hi = self.nearest[level][:, 0] - self.margin, self.farthest[level][:, 0] + self.margin
        # voxel i is boundary when its front i·h − ½ lies before hi and its back (i+1)·h − ½ after lo
        first = torch.floor((lo + 0.5) / h).clamp(0, g)
        last = torch.ceil((hi + 0.5) / h).clamp(0, g)  # one past the last
        return (last - first).clamp_min(0).flatten(1).sum(1)


def choose(candidates, truth: torch.Tensor, threshold: float, count: int):
    """Indices of `count` candidates: those with true boundary or scored above the threshold first, in
    random order (HSP's thinning), then others at random."""
    priority = ((truth | (candidates.score > threshold)).float() * 2 + torch.rand_like(candidates.score))
    return priority.topk(min(count, len(priority))).indices


def walls(cfg) -> bool:
    if cfg["hsp_boundary"] not in ("front", "all"):
        raise ValueError(f"--hsp-boundary {cfg['hsp_boundary']!r}: choose front or all")
    return cfg["hsp_boundary"] == "all"


def block_counts(text: str, levels: int) -> list[int]:
    counts = [int(c) for c in str(text).split(",")]
    return (counts * levels)[: levels - 1] if len(counts) == 1 else counts


def hierarchy_losses(net: HSPNet, decoded: torch.Tensor, batch, cfg) -> dict[str, torch.Tensor]:
    """HSP's losses over a batch, with the octants holding true boundary expanded (see the docstring).
    Returns "classes" and "occupancy" (trained) and per-level figures for the log."""
    targets = HierarchyTargets(batch.depth, batch.mask, net.grids, net.config.input_size, walls=walls(cfg))
    coarse = net.coarse(decoded)
    labels = targets.all_labels(0)
    class_losses = [F.cross_entropy(coarse.classes.float(), labels)]
    occupancy_losses, parts = [], {}
    truth = octant_max((labels == BOUNDARY).float()).flatten() > 0
    counts = block_counts(cfg["hsp_blocks"], net.config.hsp_levels)
    parent = None
    for level in range(1, net.config.hsp_levels):
        candidates = net.candidates(level, coarse, parent)
        chosen = candidates.take(choose(candidates, truth, cfg["hsp_threshold"], counts[level - 1]))
        blocks = net.blocks(level, coarse, parent, chosen)
        occupancy = targets.occupancy(level, blocks.sample, blocks.origin)
        occupancy_losses.append(F.binary_cross_entropy_with_logits(blocks.core(blocks.occupancy)[:, 0], occupancy))
        parts[f"occupancy{level}"] = occupancy_losses[-1].detach()
        if blocks.classes is not None:
            labels = targets.labels(level, blocks.sample, blocks.origin)
            class_losses.append(F.cross_entropy(blocks.core(blocks.classes).float(), labels))
            parts[f"classes{level}"] = class_losses[-1].detach()
            truth = octant_max((labels == BOUNDARY).float()).flatten() > 0
        parts[f"boundary_blocks{level}"] = (candidates.score > cfg["hsp_threshold"]).sum().float() / len(decoded)
        parent = blocks
    parts["classes0"] = class_losses[0].detach()
    return {"classes": sum(class_losses) / len(class_losses), "occupancy": sum(occupancy_losses) / len(occupancy_losses), **parts}


@torch.no_grad()
def evaluate_hierarchy(net: HSPNet, source, threshold: float, seed: int, batches: int = 2, batch_size: int = 8,
                       limits=MAX_BLOCKS, walls: bool = False) -> dict[str, float]:
    """On held-out renders, as inference runs: blocks a face at each level, the share of the finest
    level's true boundary voxels that lie in refined blocks (recall), and the finest level's IoU inside
    the refined blocks."""
    net.eval()
    device = next(net.parameters()).device
    autotune, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False  # block counts vary here: no tuning per shape
    levels = net.config.hsp_levels
    blocks_per_level = torch.zeros(levels - 1)
    covered = total = inter = union = 0.0
    for i in range(batches):
        batch = source.sample(batch_size, seed + i)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            _, found = net.hierarchy(net.trunk(batch.image), threshold, limits)
        targets = HierarchyTargets(batch.depth, batch.mask, net.grids, net.config.input_size, walls)
        for level, blocks in enumerate(found):
            blocks_per_level[level] += len(blocks.sample)
        last = found[-1]
        labels = targets.labels(levels - 1, last.sample, last.origin)
        covered += (labels == BOUNDARY).sum().item()
        total += targets.boundary_voxels(levels - 1).sum().item()
        predicted = last.core(last.occupancy)[:, 0] > 0
        truth = targets.occupancy(levels - 1, last.sample, last.origin) > 0.5
        inter += (predicted & truth).sum().item()
        union += (predicted | truth).sum().item()
    net.train()
    torch.backends.cudnn.benchmark = autotune
    record = {f"blocks{level + 1}": (blocks_per_level[level] / (batches * batch_size)).item() for level in range(levels - 1)}
    return {**record, "boundary_recall": covered / max(total, 1), "block_iou": inter / max(union, 1)}


def oracle_hierarchy(targets: HierarchyTargets, sample: int):
    """The hierarchy a perfect head would give for one face of the batch (facevox.hierarchy.Hierarchy):
    the target occupancy as the prior and in the blocks, the blocks where the true boundary is. What the
    runtime's composition (front depth, volumes) costs with nothing wrong upstream."""
    from facevox.hierarchy import Hierarchy, Level

    grids = targets.grids
    device = targets.fine_depth.device
    first = torch.tensor([[0, 0, 0]], device=device)
    which = torch.tensor([sample], device=device)
    prior = targets.occupancy(1, which, first, grids[1])[0]
    labels, origin, levels = targets.labels(0, which, first, grids[0]), None, []
    for level in range(1, len(grids)):
        octants = torch.nonzero(octant_max((labels == BOUNDARY).float()))  # (m, 4): block (or face), octant k, y, x
        origin = BLOCK * octants[:, 1:] if level == 1 else 2 * (origin[octants[:, 0]] + 8 * octants[:, 1:])
        faces = torch.full((len(origin),), sample, device=device)
        core = targets.occupancy(level, faces, origin)
        ahead = targets.occupancy(level, faces, origin - torch.tensor([1, 0, 0], device=device))[:, :1]  # the voxel in front
        levels.append(Level(origin.cpu().numpy(), torch.cat([ahead, core], 1).cpu().numpy()))
        labels = targets.labels(level, faces, origin)
    return Hierarchy(targets.size, grids, prior.cpu().numpy(), levels)
