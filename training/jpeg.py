"""Baseline JPEG compression and decompression in torch, so that training images never leave the GPU.

What libjpeg does at a given quality (IJG table scaling): RGB → YCbCr, chroma averaged over 2×2
pixels (4:2:0, the usual camera and OpenCV setting), 8×8 block DCT, division by the Annex K tables,
rounding, and back; chroma is upsampled bilinearly (libjpeg's "fancy" upsampling is close to it).
Entropy coding is lossless, so it is left out. Image sides must be multiples of 16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LUMA_TABLE = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]
CHROMA_TABLE = [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 + [47, 66] + [99] * 38
TO_YCBCR = [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]


def quantisation_tables(quality: torch.Tensor) -> torch.Tensor:
    """(b,) qualities 1–100 → (b, 2, 8, 8) luma and chroma step sizes, scaled as libjpeg does."""
    tables = torch.tensor([LUMA_TABLE, CHROMA_TABLE], dtype=torch.float32, device=quality.device).view(1, 2, 8, 8)
    q = quality.float().clamp(1, 100)[:, None, None, None]
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)
    return ((tables * scale + 50) / 100).floor().clamp(1, 255)


def dct_matrix(device) -> torch.Tensor:
    """The orthonormal 8-point DCT-II (rows: frequencies), which is JPEG's transform."""
    u, x = torch.meshgrid(torch.arange(8.0, device=device), torch.arange(8.0, device=device), indexing="ij")
    scale = torch.where(u == 0, math.sqrt(1 / 8), math.sqrt(2 / 8))
    return scale * torch.cos((2 * x + 1) * u * math.pi / 16)


def _quantise(planes: torch.Tensor, steps: torch.Tensor, dct: torch.Tensor) -> torch.Tensor:
    """(b, c, h, w) level-shifted planes → the same after block DCT, quantisation by (b, 1, 8, 8) steps, inverse DCT."""
    b, c, h, w = planes.shape
    blocks = planes.reshape(b, c, h // 8, 8, w // 8, 8)
    coefficients = torch.einsum("ux,bcixjy,vy->bciujv", dct, blocks, dct)
    steps = steps.view(b, 1, 1, 8, 1, 8)
    coefficients = torch.round(coefficients / steps) * steps
    return torch.einsum("ux,bciujv,vy->bcixjy", dct, coefficients, dct).reshape(b, c, h, w)


def jpeg_roundtrip(image: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """(b, 3, h, w) RGB in [0, 1] and (b,) qualities → the images as a JPEG decoder would return them."""
    with torch.autocast(image.device.type, enabled=False):
        to_ycbcr = torch.tensor(TO_YCBCR, device=image.device)
        ycbcr = torch.einsum("ij,bjhw->bihw", to_ycbcr, image.float().clamp(0, 1) * 255)  # chroma centred on 0
        tables, dct = quantisation_tables(quality), dct_matrix(image.device)
        luma = _quantise(ycbcr[:, :1] - 128, tables[:, 0], dct) + 128
        chroma = _quantise(F.avg_pool2d(ycbcr[:, 1:], 2), tables[:, 1], dct)
        chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
        rgb = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_ycbcr), torch.cat([luma, chroma], 1))
        return (rgb.round().clamp(0, 255)) / 255
