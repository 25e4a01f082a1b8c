"""The volumetric face network: a stacked hourglass (VRN) with volume, landmark and depth heads.

Input (b, 3, 192, 192) RGB in [0, 1]. The trunk works at 1/4 resolution (48×48); the heads work at
1/2 (96×96) with a skip from the stem; the volume logits are upsampled to the input resolution.
Sizes are named entries of `CONFIGS` (timm-style registry): stacks and width. Training builds and
exports it (training/); the runtime runs the exported ONNX, or this module on a GPU (facevox.torch_volume).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class NetConfig:
    stacks: int = 2
    width: int = 128
    depth: int = 4  # hourglass levels below 48×48
    volume_depth: int = 200
    landmarks: int = 68
    input_size: int = 192
    hsp_levels: int = 0  # 0: the dense volume head alone; else the hierarchical head's levels (facevox.hsp_net)
    hsp_channels: int = 8  # feature channels of every hierarchical level
    hsp_spatial: int = 1  # levels (from 1) whose blocks have a 3×3×3 convolution (of the parent's features); finer ones are pointwise


CONFIGS = {
    "vrn-hg1-w128": NetConfig(stacks=1, width=128),
    "vrn-hg2-w128": NetConfig(stacks=2, width=128),
    "vrn-hg2-w192": NetConfig(stacks=2, width=192),
    "vrn-hg2-w256": NetConfig(stacks=2, width=256),
    # Hierarchical surface prediction on vrn-hg2-w192's backbone: 48³ → 96³ → 192³ → 384³ (docs/hsp.md).
    "hsp-hg1-w128": NetConfig(stacks=1, width=128, hsp_levels=4, hsp_channels=8),
    "hsp-hg2-w192": NetConfig(stacks=2, width=192, hsp_levels=4, hsp_channels=8),
}


class Residual(nn.Module):
    """Bottleneck residual block (pre-activation), as in the hourglass papers."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        mid = outputs // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(inputs), nn.ReLU(inplace=True), nn.Conv2d(inputs, mid, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, outputs, 1),
        )
        self.skip = nn.Identity() if inputs == outputs else nn.Conv2d(inputs, outputs, 1)

    def forward(self, x):
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    def __init__(self, depth: int, width: int):
        super().__init__()
        self.up = Residual(width, width)
        self.down = Residual(width, width)
        self.inner = Hourglass(depth - 1, width) if depth > 1 else Residual(width, width)
        self.out = Residual(width, width)

    def forward(self, x):
        low = self.out(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.up(x) + F.interpolate(low, scale_factor=2, mode="nearest")


class VolumeNet(nn.Module):
    def __init__(self, config: NetConfig):
        super().__init__()
        self.config = c = config
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        self.stem_out = Residual(64, 64)  # 96×96 skip to the heads
        self.pre = nn.Sequential(Residual(64, c.width), nn.MaxPool2d(2), Residual(c.width, c.width))
        self.hourglasses = nn.ModuleList(Hourglass(c.depth, c.width) for _ in range(c.stacks))
        self.features = nn.ModuleList(
            nn.Sequential(Residual(c.width, c.width), nn.Conv2d(c.width, c.width, 1), nn.BatchNorm2d(c.width), nn.ReLU(inplace=True))
            for _ in range(c.stacks)
        )
        self.merges = nn.ModuleList(nn.Conv2d(c.width, c.width, 1) for _ in range(c.stacks - 1))
        head = 128
        self.decode = nn.Sequential(
            nn.Conv2d(c.width + 64, head, 3, padding=1, bias=False), nn.BatchNorm2d(head), nn.ReLU(inplace=True),
            nn.Conv2d(head, head, 3, padding=1, bias=False), nn.BatchNorm2d(head), nn.ReLU(inplace=True),
        )
        self.volume_head = nn.Conv2d(head, c.volume_depth, 1)
        self.heatmap_head = nn.Conv2d(head, c.landmarks, 1)
        self.depth_head = nn.Conv2d(head, c.landmarks, 1)

    def forward(self, image):
        """Returns volume logits (b, D, s, s), heatmaps (b, 68, s/2, s/2), landmark depths (b, 68, s/2, s/2)."""
        decoded = self.trunk(image)
        return self.volume_logits(decoded), *self.landmark_maps(decoded)

    def trunk(self, image):
        """The decoded features (b, 128, s/2, s/2) that all three heads read."""
        stem = self.stem(image - 0.5)
        skip = self.stem_out(stem)
        x = self.pre(stem)
        for i, (hourglass, features) in enumerate(zip(self.hourglasses, self.features)):
            y = features(hourglass(x))
            if i < len(self.merges):
                x = x + self.merges[i](y)
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return self.decode(torch.cat([y, skip], 1))

    def volume_logits(self, decoded):
        return F.interpolate(self.volume_head(decoded), scale_factor=2, mode="bilinear", align_corners=False)

    def landmark_maps(self, decoded):
        """Heatmaps and landmark depths (in voxels)."""
        return self.heatmap_head(decoded), self.depth_head(decoded) * self.config.volume_depth / 4 + self.config.volume_depth / 2


def build(config: NetConfig) -> VolumeNet:
    """The network of a config: a VolumeNet, or an HSPNet where it has hierarchical levels."""
    if config.hsp_levels:
        from facevox.hsp_net import HSPNet

        return HSPNet(config)
    return VolumeNet(config)


def create(name: str) -> VolumeNet:
    return build(CONFIGS[name])
