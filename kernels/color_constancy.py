"""Shades of Gray colour constancy on the device (Finlayson & Trezzi 2004), p = 6.

Each image's illuminant is estimated per channel as the p-norm mean of its pixels,
e_c = (mean I_c^p)^(1/p), normalized to unit length; every channel is then divided by
sqrt(3) * e_c, so a grey illuminant leaves the image unchanged and a colour cast is removed.
p = 6 is the setting of the ISIC-winning dermoscopy pipelines (Barata et al. 2015 found it
best for dermoscopy). `shades_of_gray` is batched torch on uint8 NCHW (any memory format),
no host syncs; `shades_of_gray_reference` is the NumPy function those pipelines use (HWC, one
image), which the kernel is tested against.
"""
from __future__ import annotations

import numpy as np
import torch

POWER = 6


def shades_of_gray(images: torch.Tensor, power: int = POWER) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8, same shape and memory format."""
    x = images.float()
    # Normalized by 255 before the power: 255^6 is ~2.7e14, which float32 holds but sums of it lose digits.
    # In place where the value is ours: two float batches at a time, not five (host peak memory).
    illuminant = x.div(255).pow_(power).mean((2, 3), keepdim=True).pow(1 / power)          # (N, 3, 1, 1)
    illuminant = illuminant / illuminant.norm(dim=1, keepdim=True).clamp_min(1e-12)
    gain = 1 / (illuminant * 3 ** 0.5).clamp_min(1e-6)
    # Truncation to uint8, as the reference's astype: the same levels, not rounded ones.
    return x.mul_(gain).clamp_(0, 255).to(torch.uint8)


def shades_of_gray_reference(image: np.ndarray, power: int = POWER) -> np.ndarray:
    """The NumPy formulation of the ISIC pipelines: HxWx3 uint8 -> HxWx3 uint8."""
    img = image.astype(np.float32)
    rgb = np.power(np.mean(np.power(img, power), (0, 1)), 1 / power)
    rgb = rgb / np.sqrt(np.sum(np.power(rgb, 2.0)))
    rgb = 1 / (rgb * np.sqrt(3))
    return np.clip(np.multiply(img, rgb), 0, 255).astype(image.dtype)
