"""Batched device augmentation: uint8 NCHW batch -> normalized, channels-last model input.

One affine map per sample expresses random-resized-crop, horizontal/vertical flips and
rotations by multiples of 90 degrees at once, so a single bilinear `grid_sample` does the
geometry; colour jitter, normalization and the cast follow. All random parameters are drawn
on the device from a generator reseeded per step from (seed, step key), so a batch is a pure
function of its key: reproducible, resumable mid-epoch, and never drawn on the host per sample.
`augment_reference` is the definition other implementations are tested against; the fused
Triton kernel (kernels/augment_triton.py) computes the same in one pass and is what
`DeviceAugment` uses on CUDA; kernels/augment_cpu.py resizes uint8 crops, faster on the CPU for large outputs, and
is what it uses there for outputs of 176 px and more. Optional CLAHE
(kernels/clahe.py, `--data.clahe`) runs on the uint8 batch before the geometry, the same on
train, val and test for every loader that augments here (plain, tensor, nvjpeg;
loaders/base.py refuses the option for the others).
"""
from __future__ import annotations

import functools
import math
import os
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


IMPLEMENTATIONS = ("auto", "triton", "cpu", "reference")


def triton_available(device=None) -> bool:
    """Triton can launch on tensors of `device` (default: CUDA when there is one, else the CPU):
    compiled kernels on a CUDA device, the interpreter (TRITON_INTERPRET=1) on CPU tensors. A GPU
    in the machine says nothing about CPU tensors: compiled Triton must never get those."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def pick_impl(impl, device: torch.device):
    """`auto`: the fused Triton kernel on CUDA; on the CPU the uint8 crop-and-resize path for
    large outputs and the reference for small ones (kernels/augment_cpu.py, augment_cpu_auto)."""
    if callable(impl):
        return impl
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"augment impl must be one of {', '.join(IMPLEMENTATIONS)} or a callable; got {impl!r}")
    if impl == "auto" and device.type == "cpu":
        from kernels.augment_cpu import augment_cpu_auto  # it imports this module
        return augment_cpu_auto
    if impl == "auto":
        impl = "triton" if device.type == "cuda" and triton_available(device) else "reference"
    if impl == "reference":
        return augment_reference
    if impl == "cpu":
        from kernels.augment_cpu import augment_cpu  # it imports this module
        return augment_cpu
    if not triton_available(device):
        raise RuntimeError(f"augment impl 'triton' on {device.type} tensors needs triton and a CUDA device "
                           "(CPU tensors: the interpreter, TRITON_INTERPRET=1)")
    from kernels.augment_triton import augment_triton  # lazy: triton.jit reads TRITON_INTERPRET at import
    return augment_triton


class DeviceAugment:
    """Callable used by every loader: `aug(uint8_batch, key)` with key an int unique per batch.

    `impl` is "auto" (Triton on CUDA, size-dependent on CPU), "triton", "cpu", "reference" or a callable
    with `augment_reference`'s signature; tests force either to compare them.
    """

    def __init__(self, spec: AugmentSpec, seed: int, device, impl="auto"):
        self.spec, self.seed, self.device = spec, seed, torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.impl = pick_impl(impl or "auto", self.device)

    def __call__(self, images: torch.Tensor, key: int) -> torch.Tensor:
        # Host-side reseed (no device sync): the batch depends only on (seed, key).
        self.generator.manual_seed((self.seed * 1_000_003 + key) % (2**63 - 1))
        params = draw_params(self.spec, images.shape[0], self.generator, self.device)
        if self.spec.color_constancy:
            from kernels.color_constancy import shades_of_gray
            images = shades_of_gray(images)
        if self.spec.clahe:
            from kernels.clahe import clahe_rgb
            images = clahe_rgb(images)
        return self.impl(images, params, self.spec)
