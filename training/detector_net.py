"""facevox's face detector network: a small anchor-free (CenterNet-style) detector.

A depthwise-separable backbone down to 1/32, a feature pyramid back up to 1/4, and one head at stride
4 with five maps: face-centre logit, log width, log height (in stride cells) and the centre's
sub-cell offset (x, y). A box is the box of the face's 68 iBUG landmarks (facevox's face box), so
no box convention is needed at run time. The runtime decodes the maps in numpy
(`facevox.faces.OnnxFaceDetector`); `decode` here is the same rule in torch, for evaluation.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

STRIDE = 4


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3×3 depthwise then 1×1 pointwise, each with batch norm and ReLU."""
    return nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, cout))


CONFIGS = {
    # name: (stem, widths at 1/4, 1/8, 1/16, 1/32, pyramid width)
    "det-s": (16, (32, 64, 96, 128), 32),
}


class DetectorNet(nn.Module):
    def __init__(self, name: str = "det-s"):
        super().__init__()
        stem, (w4, w8, w16, w32), pyramid = CONFIGS[name]
        self.stem = conv_bn(3, stem, 3, 2)
        self.down4 = nn.Sequential(separable(stem, w4, 2), separable(w4, w4))
        self.down8 = nn.Sequential(separable(w4, w8, 2), separable(w8, w8))
        self.down16 = nn.Sequential(separable(w8, w16, 2), separable(w16, w16), separable(w16, w16))
        self.down32 = nn.Sequential(separable(w16, w32, 2), separable(w32, w32), separable(w32, w32))
        self.lateral = nn.ModuleList([conv_bn(w, pyramid) for w in (w4, w8, w16, w32)])
        self.smooth = nn.ModuleList([separable(pyramid, pyramid) for _ in range(3)])
        self.head = nn.Sequential(separable(pyramid, pyramid), nn.Conv2d(pyramid, 5, 1))
        nn.init.constant_(self.head[-1].bias, 0.0)
        with torch.no_grad():
            self.head[-1].bias[0] = -4.6  # centre logits start near p = 0.01 (focal-loss practice)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (b, 3, h, w) RGB in [0, 1], h and w multiples of 32 → maps (b, 5, h/4, w/4)."""
        x = self.stem((image - 0.5) / 0.25)
        c4 = self.down4(x)
        c8 = self.down8(c4)
        c16 = self.down16(c8)
        c32 = self.down32(c16)
        p = self.lateral[3](c32)
        for level, (c, smooth) in enumerate(zip((c16, c8, c4), self.smooth)):
            p = smooth(self.lateral[2 - level](c) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        return self.head(p)


def decode(maps: torch.Tensor, threshold: float = 0.3, top: int = 100) -> list[torch.Tensor]:
    """Maps (b, 5, h, w) → per image an (n, 5) tensor of boxes x0, y0, x1, y1 (input pixels) and score."""
    heat = torch.sigmoid(maps[:, 0:1].float())
    peaks = heat * (heat == F.max_pool2d(heat, 3, 1, 1))
    found = []
    for i in range(maps.shape[0]):
        scores, index = peaks[i, 0].flatten().topk(min(top, peaks[i, 0].numel()))
        keep = scores > threshold
        scores, index = scores[keep], index[keep]
        width = maps.shape[-1]
        ys, xs = (index // width).float(), (index % width).float()
        m = maps[i, :, :, :].flatten(1)[:, index].float()
        cx, cy = (xs + m[3]) * STRIDE, (ys + m[4]) * STRIDE
        w, h = torch.exp(m[1]) * STRIDE, torch.exp(m[2]) * STRIDE
        found.append(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, scores], -1))
    return found
