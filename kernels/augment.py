"""Batched device augmentation: uint8 NCHW batch -> normalized, channels-last model input.

One affine map per sample expresses random-resized-crop, horizontal/vertical flips and
rotations by multiples of 90 degrees at once, so a single bilinear `grid_sample` does the
geometry; colour jitter, normalization and the cast follow. All random parameters are drawn
on the device from a generator reseeded per step from (seed, step key), so a batch is a pure
function of its key: reproducible, resumable mid-epoch, and never drawn on the host per sample.
`augment_reference` (kernels/augment_reference.py) is the definition other implementations are
tested against; this module picks one (`pick_impl`) and runs it (`DeviceAugment`); the fused
Triton kernel (kernels/augment_triton.py) computes the same in one pass and is what
`DeviceAugment` uses on CUDA; kernels/augment_cpu.py resizes uint8 crops, faster on the CPU for large outputs, and
is what it uses there for outputs of 176 px and more. Optional CLAHE
(kernels/clahe.py, `--data.clahe`) runs on the uint8 batch before the geometry, the same on
train, val and test for every loader that augments here (plain, tensor, nvjpeg;
loaders/base.py refuses the option for the others).
"""
from __future__ import annotations

import os

import torch

from kernels.augment_reference import (  # noqa: F401  (the definition; callers import it from here too)
    IMAGENET_MEAN, IMAGENET_STD, AugmentSpec, _eval_params, affine_from_params, augment_reference, constant,
    draw_params, jitter_colors, sampling_grid,
)

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
        from kernels.augment_cpu import augment_cpu_auto
        return augment_cpu_auto
    if impl == "auto":
        impl = "triton" if device.type == "cuda" and triton_available(device) else "reference"
    if impl == "reference":
        return augment_reference
    if impl == "cpu":
        from kernels.augment_cpu import augment_cpu
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
