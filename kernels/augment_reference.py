"""The definition of the batched device augmentation: its spec, its random parameters and
`augment_reference`, the pure-torch implementation every other one is tested against.

Imports nothing of the project: the dispatcher (kernels/augment.py) and the implementations
(kernels/augment_cpu.py, kernels/augment_triton.py) import this module, never each other.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentSpec:
    out_size: int
    train: bool = True
    scale_min: float = 0.35
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    jitter: float = 0.0
    eval_crop: float = 1.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    out_dtype: torch.dtype = torch.float32
    clahe: bool = False
    color_constancy: bool = False  # Shades of Gray (kernels/color_constancy.py), before CLAHE and the geometry


def draw_params(spec: AugmentSpec, n: int, generator: torch.Generator, device) -> torch.Tensor:
    """(n, 10) float32: cx, cy, w, h (normalized box), fx, fy, k (rot90), bright, contrast, sat."""
    if not spec.train:  # the same for every batch: built once per (crop, n, device), read only
        return _eval_params(float(spec.eval_crop), n, torch.device(device))
    p = torch.empty(n, 10, device=device)
    u = torch.rand(n, 9, device=device, generator=generator)
    area = spec.scale_min + (1 - spec.scale_min) * u[:, 0]
    log_r = math.log(spec.ratio[0]) + (math.log(spec.ratio[1]) - math.log(spec.ratio[0])) * u[:, 1]
    ratio = torch.exp(log_r)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    p[:, 0] = (2 * u[:, 2] - 1) * (1 - w)
    p[:, 1] = (2 * u[:, 3] - 1) * (1 - h)
    p[:, 2], p[:, 3] = w, h
    p[:, 4] = torch.where((u[:, 4] < 0.5) & spec.hflip, -1.0, 1.0)
    p[:, 5] = torch.where((u[:, 5] < 0.5) & spec.vflip, -1.0, 1.0)
    p[:, 6] = torch.floor(u[:, 6] * 4).clamp(max=3) if spec.rot90 else 0.0
    j = spec.jitter
    p[:, 7] = 1 + j * (2 * u[:, 7] - 1)
    p[:, 8] = 1 + j * (2 * u[:, 8] - 1)
    p[:, 9] = 1 + j * (2 * torch.rand(n, device=device, generator=generator) - 1)
    return p


@functools.lru_cache(maxsize=16)
def _eval_params(crop: float, n: int, device: torch.device) -> torch.Tensor:
    # Built on the host and copied once: a per-batch torch.tensor(..., device=cuda) is a
    # host-to-device copy from pageable memory, which waits for the stream (a sync per batch).
    row = torch.tensor([0, 0, crop, crop, 1, 1, 0, 1, 1, 1], dtype=torch.float32)
    return row.expand(n, 10).contiguous().to(device)


@functools.lru_cache(maxsize=16)
def constant(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """A small float32 constant (normalization mean/std) on the device, copied there once."""
    return torch.tensor(values, dtype=torch.float32).to(device)


def affine_from_params(p: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) theta mapping output coords to input coords (align_corners=False convention)."""
    k = p[:, 6]
    cos = torch.cos(k * (math.pi / 2)).round()
    sin = torch.sin(k * (math.pi / 2)).round()
    fx, fy, w, h = p[:, 4], p[:, 5], p[:, 2], p[:, 3]
    theta = torch.zeros(p.shape[0], 2, 3, device=p.device)
    # diag(w, h) @ R(k) @ diag(fx, fy)
    theta[:, 0, 0] = w * cos * fx
    theta[:, 0, 1] = -w * sin * fy
    theta[:, 1, 0] = h * sin * fx
    theta[:, 1, 1] = h * cos * fy
    theta[:, 0, 2], theta[:, 1, 2] = p[:, 0], p[:, 1]
    return theta


def jitter_colors(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """x: float in [0, 1], NCHW, overwritten and returned. Brightness, contrast (around the
    image mean), saturation. In place: out-of-place it held five batch-sized temporaries, at
    224 px a quarter of a GB of host peak memory on the CPU."""
    x.mul_(p[:, 7].view(-1, 1, 1, 1))
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    mean = gray.mean(dim=(2, 3), keepdim=True)
    x.sub_(mean).mul_(p[:, 8].view(-1, 1, 1, 1)).add_(mean)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    return x.sub_(gray).mul_(p[:, 9].view(-1, 1, 1, 1)).add_(gray).clamp_(0, 1)


def sampling_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """`F.affine_grid(theta, (n, C, size, size), align_corners=False)` by broadcasting: the same
    numbers, several times cheaper on the CPU than its batched matrix product."""
    base = (torch.arange(size, device=theta.device, dtype=torch.float32) * 2 + 1) / size - 1
    xs, ys = base.view(1, 1, size), base.view(1, size, 1)
    t = theta.view(-1, 6, 1, 1)
    gx = t[:, 0] * xs + t[:, 1] * ys + t[:, 2]
    gy = t[:, 3] * xs + t[:, 4] * ys + t[:, 5]
    return torch.stack((gx, gy), dim=-1)


def augment_reference(images: torch.Tensor, params: torch.Tensor, spec: AugmentSpec) -> torch.Tensor:
    """images: uint8 (n, 3, H, W) any memory format -> spec.out_dtype channels_last (n, 3, S, S).

    Bilinear resampling is linear, so the 1/255 scale is folded into the normalization
    (one pass instead of two) unless colour jitter needs [0, 1] values first.
    """
    n, size = images.shape[0], spec.out_size
    x = images.float()
    identity = not spec.train and spec.eval_crop == 1.0 and images.shape[-2:] == (size, size)
    if not identity:  # evaluation at the stored size samples exactly the pixel centres: skip it
        grid = sampling_grid(affine_from_params(params), size)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = constant(spec.mean, x.device).view(1, 3, 1, 1)
    std = constant(spec.std, x.device).view(1, 3, 1, 1)
    if spec.train and spec.jitter > 0:
        x = jitter_colors(x.mul_(1 / 255.0), params)
        scale = 1 / std
    else:
        scale = 1 / (255.0 * std)
    out = torch.empty((n, 3, size, size), dtype=spec.out_dtype, device=x.device,
                      memory_format=torch.channels_last)
    return out.copy_(x.mul_(scale).sub_(mean / std))  # copy_: layout and dtype in one pass
