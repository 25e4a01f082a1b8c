"""Hierarchical surface prediction (HSP; Häne, Tulsiani and Malik, 3DV 2017) on VolumeNet's backbone.

The volume is predicted coarse to fine on cube grids of G_l = (s / 4)·2^l voxels a side (48³, 96³, 192³,
384³ for the 192-pixel crop and four levels), each covering the crop and depths 0 to s crop pixels:
level l's voxel i has its centre at crop coordinate (i + ½)·h_l − ½, h_l = s / G_l, on every axis, so
level 2 is the dense model's grid (less its last 8 depths) and level 3 halves it.

* Level 0 is dense: the trunk's decoded features, pooled to 48², lifted to 48³ (a 1×1 convolution whose
  channels are depth × features) beside the dense head's own volume logits averaged onto the grid,
  then one 3×3×3 convolution; it classifies each voxel free, boundary or occupied.
* Every 8³ octant of a level whose highest boundary probability exceeds a threshold becomes a 16³
  block of the next level. A block reads its parent's features on the octant plus CONTEXT voxels each
  side (12³), up-convolves them to 24³ and predicts its 16³ core and a HALO around it (20³), from
  which its own children read their context: a child never needs a neighbour's block.
* Each block also gets an occupancy prior: at level 1 the dense head's logits averaged onto the 96³
  grid, below that its parent's occupancy logits, trilinearly upsampled; its occupancy is that prior
  plus a learnt correction (zero at initialisation, so a fresh head starts as the dense volume).
  Image features from the trunk on the parent's lateral grid enter with the parent's features (repeated
  along depth) through the up-convolution, each child with its own weights.
* Inner levels predict free / boundary / occupied; the last predicts occupancy alone, and only on its
  core (plus the voxel in front of it, for the surface's interpolation): nothing reads its halo. Only
  level 1's blocks have a 3×3×3 convolution (`hsp_spatial`), on their parent's features before the
  up-convolution; finer ones are pointwise, for CPU time.

All blocks of a level run as one batch. `facevox.hierarchy` runs the exported graphs with numpy between
levels; training (training/hsp.py) expands the octants that hold true boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from facevox.net import NetConfig, VolumeNet

BLOCK, OCTANT, CONTEXT, HALO = 16, 8, 2, 2
CROP = OCTANT + 2 * CONTEXT  # parent voxels a side that a block reads (12)
SPAN = BLOCK + 2 * HALO  # voxels a side that a block predicts, halo included (20)
FREE, BOUNDARY, OCCUPIED = 0, 1, 2
DECODED = 128  # channels of VolumeNet.trunk's output
MAX_BLOCKS = (512, 2048, 4096)  # blocks a face at levels 1, 2, 3 (and deeper) at most; a trained head refines about 80, 330, 1,400


def grid_sizes(config: NetConfig) -> list[int]:
    """Voxels a side of each level's grid."""
    return [config.input_size // 4 * 2**level for level in range(config.hsp_levels)]


def crop3d(volume: torch.Tensor, which: torch.Tensor, start: torch.Tensor, size, children: bool = False) -> torch.Tensor:
    """volume (B, C, D, H, W) → (n, C, a, b, c): volume[which[i], :, k:k+a, y:y+b, x:x+c] for each start[i] =
    (k, y, x) and size (a, b, c) (or one int for all three). children: the volume is stored in
    `to_children`'s layout ((B, C, 8d, h, w), each voxel's 8 children apart); the crop comes out in space."""
    a, b, c = (size,) * 3 if isinstance(size, int) else size
    k, y, x = (start[:, axis, None] + torch.arange(n, device=volume.device) for axis, n in enumerate((a, b, c)))
    k, y, x = k[:, :, None, None], y[:, None, :, None], x[:, None, None, :]
    if children:
        k = (4 * (k % 2) + 2 * (y % 2) + x % 2) * (volume.shape[2] // 8) + k // 2
        y, x = y // 2, x // 2
    return volume.permute(0, 2, 3, 4, 1)[which[:, None, None, None], k, y, x].permute(0, 4, 1, 2, 3)


def crop2d(maps: torch.Tensor, which: torch.Tensor, start: torch.Tensor, size) -> torch.Tensor:
    """maps (B, C, H, W) → (n, C, a, b): maps[which[i], :, y:y+a, x:x+b] for start[i] = (y, x) and size (a, b)
    (or one int for both)."""
    a, b = (size,) * 2 if isinstance(size, int) else size
    y = (start[:, 0, None] + torch.arange(a, device=maps.device))[:, :, None]
    x = (start[:, 1, None] + torch.arange(b, device=maps.device))[:, None, :]
    return maps.permute(0, 2, 3, 1)[which[:, None, None], y, x].permute(0, 3, 1, 2)


def octant_max(values: torch.Tensor) -> torch.Tensor:
    """(n, D, H, W) → (n, D/8, H/8, W/8): the highest value of each 8³ octant."""
    return F.max_pool3d(values[:, None], OCTANT)[:, 0]


@dataclass
class Coarse:
    """Level 0 and what the blocks read from the trunk. classes (b, 3, G0³) logits and features
    (b, C, G0³) of level 0; prior (b, 1, G1³): the dense head's volume logits on level 1's grid; images:
    for each level l from 1, (b, C, G_(l-1), G_(l-1)) features of the photo on its parent level's lateral grid."""

    classes: torch.Tensor
    features: torch.Tensor
    prior: torch.Tensor
    images: list[torch.Tensor]


@dataclass
class Blocks:
    """A level's blocks: sample (n,) and origin (n, 3) (k, y, x, in the level's voxels) of each core; the
    outputs over the SPAN³ around it: features (n, C, 20³), occupancy logits (n, 1, 20³), class logits
    (n, 3, 20³; None at the last level)."""

    sample: torch.Tensor
    origin: torch.Tensor
    features: torch.Tensor
    occupancy: torch.Tensor
    classes: torch.Tensor | None

    def core(self, values: torch.Tensor) -> torch.Tensor:
        """The 16³ core of outputs over SPAN³, or of the last level's (which has no children to give
        context to: its outputs are the core with the voxel in front of it in depth, 17 × 16 × 16)."""
        if values.shape[-1] == BLOCK:
            return values[:, :, 1:]
        return values[:, :, HALO : HALO + BLOCK, HALO : HALO + BLOCK, HALO : HALO + BLOCK]


@dataclass
class Candidates:
    """Octants that may become blocks of the next level: the sample, the child block's origin in the
    next level's voxels, where its parent crop lies (source: the sample's level-0 volume at level 1,
    else the parent block's index; start: the crop's corner there) and its boundary score."""

    sample: torch.Tensor
    origin: torch.Tensor
    source: torch.Tensor
    start: torch.Tensor
    score: torch.Tensor

    def take(self, chosen: torch.Tensor) -> "Candidates":
        return Candidates(*(t[chosen] for t in (self.sample, self.origin, self.source, self.start, self.score)))


class LevelHead(nn.Module):
    """One level's block network, shared by all its blocks. spatial: a 3×3×3 convolution of the parent's
    features before the up-convolution (on the parent's grid: an eighth of the voxels; else pointwise
    only: the finer levels' many blocks); prior_from_parent: the prior
    comes as the parent's occupancy logits (CROP³), to be upsampled, else at this level (SPAN³); final:
    the last level, which predicts occupancy alone and only on its core and the voxel in front of it.

    The up-convolution (kernel 2, stride 2) is a 1×1×1 convolution to each parent voxel's 8 children
    and a depth-to-space reshuffle; crops are taken before it, on the smaller parent tensors: both run
    far faster on onnxruntime's CPU kernels than a transposed convolution and slices after it."""

    def __init__(self, channels: int, final: bool, spatial: bool, prior_from_parent: bool):
        super().__init__()
        self.channels = channels
        self.up = nn.Conv3d(2 * channels, 8 * channels, 1)  # the parent's features and the image's
        self.mix = nn.Conv3d(channels, channels, 3) if spatial else None  # unpadded: the crop's context is its padding
        self.prior_in = nn.Conv3d(1, channels, 1)
        self.pointwise = nn.Conv3d(channels, channels, 1)
        self.occupancy = nn.Conv3d(channels, 1, 1)
        nn.init.zeros_(self.occupancy.weight)
        nn.init.zeros_(self.occupancy.bias)
        self.classes = None if final else nn.Conv3d(channels, 3, 1)
        self.prior_from_parent = prior_from_parent

    def upsample(self, features):
        """(n, C, a, b, c) → (n, C, 2a, 2b, 2c): each voxel's 8 children, learnt."""
        a, b, c = features.shape[-3:]
        x = self.up(features).reshape(-1, self.channels, 2, 2, 2, a, b, c)
        return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(-1, self.channels, 2 * a, 2 * b, 2 * c)

    def forward(self, features, prior, image):
        """features (n, C, 12³) of the parent around the octant; prior (n, 1, 12³ or 20³) occupancy
        logits; image (n, C, 12, 12) on the parent's lateral grid, where the features are → features
        (n, C, 20³), occupancy logits (n, 1, 20³), class logits (n, 3, 20³); the last level: features and
        occupancy over 17 × 16 × 16, no classes."""
        if self.prior_from_parent:  # (n, 1, 24³): this level's voxels from 4 before the core to 4 after it
            prior = F.interpolate(prior, scale_factor=2, mode="trilinear", align_corners=False)[:, :, 2:-2, 2:-2, 2:-2]
        inner = self.mix(features) if self.mix is not None else features[:, :, 1:-1, 1:-1, 1:-1]  # (n, C, 10³)
        inner = torch.cat([inner, image[:, :, None, 1:-1, 1:-1].expand_as(inner)], 1)
        if self.classes is None:  # parent voxels from one before the octant in depth: 2 before the core to its end
            x = self.upsample(inner[:, :, :-1, 1:-1, 1:-1])
            prior = prior[:, :, : BLOCK + 2, HALO:-HALO, HALO:-HALO]
        else:
            x = self.upsample(inner)  # SPAN³ around the core
        x = F.relu(x + self.prior_in(prior))
        x = F.relu(self.pointwise(x))
        occupancy = prior + self.occupancy(x).float()
        if self.classes is None:
            return x, occupancy[:, :, 1:], None
        return x, occupancy, self.classes(x)


def to_children(x: torch.Tensor, a: int, b: int, c: int) -> torch.Tensor:
    """(n, k, 2a, 2b, 2c) in space → (n, k, 8a, b, c) with each voxel's 8 children apart: index
    (4·pk + 2·py + px)·a + i along the third axis for voxel (2i + pk, 2j + py, 2l + px)."""
    return x.reshape(-1, x.shape[1], a, 2, b, 2, c, 2).permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(-1, x.shape[1], 8 * a, b, c)


def to_space(x: torch.Tensor, a: int, b: int, c: int) -> torch.Tensor:
    """The inverse of `to_children`."""
    return x.reshape(-1, x.shape[1], 2, 2, 2, a, b, c).permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(-1, x.shape[1], 2 * a, 2 * b, 2 * c)


def windows(head: LevelHead) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Where a head's export (`forward_apart`) reads its inputs, as (offset, size) per axis within what
    `LevelHead.forward` takes (the parent's CROP³ features and prior, the CROP² image): only what it
    uses, so that the runtime cuts no more than that and the graph has no slices."""
    if head.classes is None:  # parent voxels from one before the octant in depth: 2 before the core to its end
        features = ((1, CONTEXT, CONTEXT), (OCTANT + 1, OCTANT, OCTANT))
    else:  # SPAN³ around the core
        features = ((1, 1, 1), (CROP - 2,) * 3)
    (k, y, x), (a, b, c) = features
    image = ((y, x), (b, c))  # the features' columns
    if head.prior_from_parent:  # the parent voxels' logits and one more each side, to upsample from
        prior = ((k - 1, y - 1, x - 1), (a + 2, b + 2, c + 2))
    else:  # at this level, on the children of the features' parent voxels
        prior = ((2 * k - 2, 2 * y - 2, 2 * x - 2), (2 * a, 2 * b, 2 * c))
    if head.mix is not None:  # its unpadded 3×3×3 convolution reads one more parent voxel each side
        features = ((k - 1, y - 1, x - 1), (a + 2, b + 2, c + 2))
    return {"parent_features": features, "prior": prior, "image": image}


def cut_windows(head: LevelHead, features, prior, image):
    """`LevelHead.forward`'s inputs cut to `windows(head)`: what `forward_apart` takes."""
    cut = []
    for tensor, (offset, size) in zip((features, prior, image), windows(head).values()):
        index = tuple(slice(o, o + n) for o, n in zip(offset, size))
        cut.append(tensor[(slice(None), slice(None)) + index])
    return cut


def upsample_children(prior: torch.Tensor) -> torch.Tensor:
    """(n, 1, a + 2, b + 2, c + 2) logits → (n, 1, 8a, b, c) in `to_children`'s layout: the trilinear ×2
    upsampling (align_corners=False) of the inner a × b × c voxels, as one fixed 3×3×3 convolution (a
    child of voxel i lies a quarter voxel from it: ¾ of it and ¼ of the neighbour on the child's side)."""
    sides = torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.75, 0.25]], dtype=prior.dtype, device=prior.device)
    weight = (sides[:, None, None, :, None, None] * sides[None, :, None, None, :, None] * sides[None, None, :, None, None, :])
    children = F.conv3d(prior, weight.reshape(8, 1, 3, 3, 3))  # channel 4·pk + 2·py + px
    a, b, c = children.shape[-3:]
    return children.reshape(-1, 1, 8 * a, b, c)


def forward_apart(head: LevelHead, features, prior, image):
    """`LevelHead.forward` on its inputs cut to `windows(head)`, computed with each parent voxel's 8
    children kept apart (`to_children`'s layout) instead of shuffled
    into space: the same numbers without moving C channels through the depth-to-space shuffle (only the
    1-channel occupancy and boundary probability move; a parent's prior is upsampled straight into that
    layout). Returns the features in that layout, the occupancy logits in space, and instead of class
    logits the boundary probability of the core (n, 16, 16, 16) in space (None at the last level): what
    the octant scores need. For export (onnxruntime); training uses `forward`."""
    channels = head.channels
    if head.mix is not None:
        features = head.mix(features)
    a, b, c = features.shape[-3:]
    prior = upsample_children(prior) if head.prior_from_parent else to_children(prior, a, b, c)
    image = image[:, :, None].expand(-1, -1, a, -1, -1)
    # up(features, image) + prior_in(prior) as one 1×1×1 convolution of the parent voxels' features and image
    # features and their 8 children's priors: output channel 8·c + child j reads prior j with prior_in's weight for c
    prior_in = head.prior_in.weight.reshape(channels, 1, 1) * torch.eye(8, dtype=features.dtype, device=features.device)
    weight = torch.cat([head.up.weight.reshape(8 * channels, 2 * channels), prior_in.reshape(8 * channels, 8)], 1)
    bias = head.up.bias + head.prior_in.bias.repeat_interleave(8)
    x = F.relu(F.conv3d(torch.cat([features, image, prior.reshape(-1, 8, a, b, c)], 1), weight[..., None, None, None], bias))
    x = F.relu(head.pointwise(x.reshape(-1, channels, 8 * a, b, c)))
    occupancy = to_space(prior + head.occupancy(x).float(), a, b, c)
    if head.classes is None:  # its core and the voxel in front of it
        return x, occupancy[:, :, 1:], None
    h = HALO // 2  # parent voxels of halo on each side
    classes = head.classes(x).reshape(-1, 3, 8, a, b, c)[:, :, :, h:-h, h:-h, h:-h].reshape(-1, 3, 8 * (a - 2 * h), b - 2 * h, c - 2 * h)
    return x, occupancy, to_space(boundary_probability(classes)[:, None], a - 2 * h, b - 2 * h, c - 2 * h)[:, 0]


def level_outputs(head: LevelHead, features, prior, image) -> tuple:
    """What a level's exported graph (and facevox.torch_volume) gives for its blocks, from `forward_apart`'s
    inputs: the features (children apart) and occupancy logits over SPAN³ for the children, the octant
    scores of the core (n, 2, 2, 2) and the occupancy probability of the core with the voxel in front of
    it in depth (n, 17, 16, 16); the last level: that probability alone."""
    core = slice(HALO, HALO + BLOCK)
    out, occupancy, boundary = forward_apart(head, features, prior, image)
    if boundary is None:  # the last level's outputs are already its core and the voxel in front
        return (torch.sigmoid(occupancy[:, 0]),)
    probability = torch.sigmoid(occupancy[:, 0, HALO - 1 : HALO + BLOCK, core, core])
    return out, occupancy, octant_max(boundary), probability


def boundary_probability(classes: torch.Tensor) -> torch.Tensor:
    """(n, 3, ...) class logits → (n, ...) the softmax's boundary probability (written out: faster in ONNX)."""
    free, boundary, occupied = classes[:, FREE], classes[:, BOUNDARY], classes[:, OCCUPIED]
    return 1 / (1 + torch.exp(free - boundary) + torch.exp(occupied - boundary))


class HSPNet(VolumeNet):
    """VolumeNet with the hierarchical head beside its dense one (which gives the head its prior)."""

    def __init__(self, config: NetConfig):
        super().__init__(config)
        channels, levels = config.hsp_channels, config.hsp_levels
        self.grids = grid_sizes(config)
        if config.volume_depth < config.input_size:
            raise ValueError("the hierarchical grids need the dense volume at least as deep as the crop is wide")
        self.lift = nn.Conv2d(DECODED, channels * self.grids[0], 1)
        self.level0 = nn.Sequential(nn.Conv3d(channels + 1, channels, 3, padding=1), nn.ReLU(inplace=True),
                                    nn.Conv3d(channels, channels, 1), nn.ReLU(inplace=True))
        self.classes0 = nn.Conv3d(channels, 3, 1)
        self.image_maps = nn.ModuleList(nn.Conv2d(DECODED, channels, 1) for _ in range(1, levels))
        self.levels = nn.ModuleList(
            LevelHead(channels, final=level == levels - 1, spatial=level <= config.hsp_spatial and level < levels - 1,
                      prior_from_parent=level >= 2)
            for level in range(1, levels))

    def backbone(self) -> list[nn.Module]:
        """The parts the dense model already has (trunk and its three heads): what --freeze-steps holds."""
        return [self.stem, self.stem_out, self.pre, self.hourglasses, self.features, self.merges, self.decode,
                self.volume_head, self.heatmap_head, self.depth_head]

    def prior_logits(self, decoded: torch.Tensor) -> torch.Tensor:
        """The dense head's volume logits on level 1's grid (b, 1, G1³), float32."""
        g1 = self.grids[1]
        dense = self.volume_head(decoded).float()[:, :self.config.input_size]  # (b, s, s/2, s/2): depth k, native lateral grid
        return dense.reshape(decoded.shape[0], g1, -1, g1, g1).mean(2)[:, None]  # level 1's voxel i holds depths 2i and 2i + 1

    def coarse(self, decoded: torch.Tensor) -> Coarse:
        """Level 0, the prior and the image features, from the trunk's decoded features (b, 128, s/2, s/2)."""
        g0, g1 = self.grids[0], self.grids[1]
        b = decoded.shape[0]
        prior = self.prior_logits(decoded)
        lifted = self.lift(F.avg_pool2d(decoded, 2)).reshape(b, -1, g0, g0, g0)
        features = self.level0(torch.cat([lifted, F.avg_pool3d(prior, 2).to(lifted.dtype)], 1))
        images = [F.avg_pool2d(m(decoded), 2) if g < g1 else m(decoded) if g == g1
                  else F.interpolate(m(decoded), size=(g, g), mode="bilinear", align_corners=False)
                  for m, g in zip(self.image_maps, self.grids)]  # on each level's parent grid (level 1's: level 0's)
        return Coarse(self.classes0(features), features, prior, images)

    def candidates(self, level: int, coarse: Coarse, parent: Blocks | None) -> Candidates:
        """Every octant of the level above `level` (its blocks' octants, or all of level 0's), scored."""
        device = coarse.classes.device
        if level == 1:
            scores = octant_max(boundary_probability(coarse.classes.float()))  # (b, n, n, n)
            b, n = scores.shape[0], scores.shape[1]
            index = torch.stack(torch.meshgrid(*[torch.arange(n, device=device)] * 3, indexing="ij"), -1).reshape(-1, 3)
            sample = torch.arange(b, device=device).repeat_interleave(len(index))
            octant = index.repeat(b, 1)
            return Candidates(sample, BLOCK * octant, sample, OCTANT * octant, scores.reshape(-1))
        scores = octant_max(boundary_probability(parent.core(parent.classes).float()))  # (m, 2, 2, 2)
        m = scores.shape[0]
        sub = torch.stack(torch.meshgrid(*[torch.arange(2, device=device)] * 3, indexing="ij"), -1).reshape(-1, 3)
        source = torch.arange(m, device=device).repeat_interleave(8)
        sub = sub.repeat(m, 1)
        origin = 2 * (parent.origin[source] + OCTANT * sub)
        return Candidates(parent.sample[source], origin, source, OCTANT * sub, scores.reshape(-1))

    def blocks(self, level: int, coarse: Coarse, parent: Blocks | None, chosen: Candidates) -> Blocks:
        """Run `level`'s head on the chosen octants, all in one batch."""
        head = self.levels[level - 1]
        if level == 1:
            features = crop3d(F.pad(coarse.features, (CONTEXT,) * 6), chosen.source, chosen.start, CROP)
            prior = crop3d(F.pad(coarse.prior, (HALO,) * 6, mode="replicate"), chosen.sample, chosen.origin, SPAN)
        else:
            features = crop3d(parent.features, chosen.source, chosen.start, CROP)
            prior = crop3d(parent.occupancy, chosen.source, chosen.start, CROP)
        # on the parent's grid, where its features are: the octant's corner there is half the block's origin
        image = crop2d(F.pad(coarse.images[level - 1], (CONTEXT,) * 4), chosen.sample, chosen.origin[:, 1:] // 2, CROP)
        out, occupancy, classes = head(features, prior, image)
        return Blocks(chosen.sample, chosen.origin, out, occupancy, classes)

    def hierarchy(self, decoded: torch.Tensor, threshold: float, limits=MAX_BLOCKS) -> tuple[Coarse, list[Blocks]]:
        """Inference: refine every octant whose boundary probability exceeds `threshold`, at most
        limits[level - 1] a face on average (the highest scores), so that a poor head cannot run away."""
        coarse, levels = self.coarse(decoded), []
        for level in range(1, self.config.hsp_levels):
            candidates = self.candidates(level, coarse, levels[-1] if levels else None)
            above = torch.nonzero(candidates.score > threshold)[:, 0]
            limit = limits[min(level, len(limits)) - 1] * len(decoded)
            if len(above) > limit:
                above = above[candidates.score[above].topk(limit).indices]
            levels.append(self.blocks(level, coarse, levels[-1] if levels else None, candidates.take(above)))
        return coarse, levels
