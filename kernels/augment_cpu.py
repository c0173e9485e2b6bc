"""The CPU implementation of the batched augmentation: uint8 crop and resize per sample.

`augment_reference` resamples every output pixel with a float `grid_sample`, which on the CPU
costs more than decoding the JPEG (figures: docs/benchmarks.md, "Kernel timings").
Here the geometry stays in uint8: each sample's crop box is cut out as a view, resized with
`F.interpolate` (bilinear, no antialias, as the reference; PyTorch's vectorized uint8
channels-last path), and its flips and rotation by a multiple of 90 degrees are a permuted
view that one multiply casts, scales and writes into the output while the image is still in
cache (colour jitter, when asked for, runs on floats as in the reference). Large images favour
this path, small ones the reference (see augment_cpu_auto).

Same parameters and the same distribution as the reference, with three approximations: the
crop box is snapped to whole pixels (at most half a pixel per edge); the crop is resized alone,
so its outermost output pixels blend with the crop's own edge rather than the pixels just
beyond it (torchvision's crop-then-resize does the same); and the resize result is rounded to
uint8 (bf16/fp16 outputs are then normalized in that precision). Flips and rotations are
exact. tests/kernels/test_kernel_augment_cpu.py compares it with the reference: exact without
a crop, within a stated tolerance with one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.augment_reference import AugmentSpec, augment_reference, jitter_colors


def crop_box(p: torch.Tensor, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Per sample (top, bottom, left, right) whole-pixel box nearest the normalized one."""
    cx, cy, w, h = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    edges = torch.stack(((cy - h + 1) * height / 2, (cy + h + 1) * height / 2,
                         (cx - w + 1) * width / 2, (cx + w + 1) * width / 2), dim=1).round().long()
    boxes = []
    for top, bottom, left, right in edges.tolist():  # a CPU tensor: no device sync
        top, left = min(max(top, 0), height - 1), min(max(left, 0), width - 1)
        boxes.append((top, min(max(bottom, top + 1), height), left, min(max(right, left + 1), width)))
    return boxes


def flip_rotate_view(img: torch.Tensor, fx: float, fy: float, k: int) -> torch.Tensor:
    """The view of a (3, S, S) image that `affine_from_params`' flip-then-rotate map samples.

    Sampling out(v, u) = img(R(k) (fx u, fy v)) is a transpose for odd k, then a row and/or
    column reversal whose signs follow from the rotation (worked out per k below).
    """
    row_sign, col_sign = {0: (fy, fx), 1: (-fy, fx), 2: (-fy, -fx), 3: (fy, -fx)}[k]
    if k % 2:
        img = img.transpose(1, 2)
    dims = [d for d, sign in ((1, row_sign), (2, col_sign)) if sign < 0]
    return img.flip(dims) if dims else img


def augment_cpu(images: torch.Tensor, params: torch.Tensor, spec: AugmentSpec) -> torch.Tensor:
    """Same signature and output contract as `augment_reference`; CPU tensors only."""
    if images.device.type != "cpu":
        raise ValueError(f"augment_cpu runs on CPU tensors; got a batch on {images.device}")
    n, size = images.shape[0], spec.out_size
    height, width = images.shape[-2:]
    identity = not spec.train and spec.eval_crop == 1.0 and (height, width) == (size, size)
    if identity:
        return augment_reference(images, params, spec)  # no resampling: the reference is one pass
    jitter = spec.train and spec.jitter > 0
    std, mean = torch.tensor(spec.std).view(3, 1, 1), torch.tensor(spec.mean).view(3, 1, 1)
    # Jitter needs [0, 1] values first; otherwise scale and shift normalize in the same pass.
    scale, shift = (torch.full((3, 1, 1), 1 / 255.0), None) if jitter else (1 / (255.0 * std), mean / std)
    out = torch.empty((n, 3, size, size), dtype=torch.float32 if jitter else spec.out_dtype,
                      memory_format=torch.channels_last)
    geometry = params[:, 4:7].tolist()
    for i, (top, bottom, left, right) in enumerate(crop_box(params, height, width)):
        crop = images[i:i + 1, :, top:bottom, left:right]
        if crop.shape[-2:] != (size, size):
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        fx, fy, k = geometry[i]
        # Per sample, while the image is still in cache: orient, cast and scale in one pass.
        sample = torch.mul(flip_rotate_view(crop[0], fx, fy, int(k)), scale, out=out[i])
        if shift is not None:
            sample.sub_(shift)
    if not jitter:
        return out
    x = jitter_colors(out, params).sub_(mean).div_(std)
    return x if spec.out_dtype == torch.float32 else \
        torch.empty_like(x, dtype=spec.out_dtype, memory_format=torch.channels_last).copy_(x)


# Below this output size the per-sample path's fixed cost (a Python iteration and three
# dispatched ops per image) outweighs its saving; the crossover was measured with
# `python -m bench.kernels` (docs/benchmarks.md, "Kernel timings").
CPU_PATH_MIN_SIZE = 176


def augment_cpu_auto(images: torch.Tensor, params: torch.Tensor, spec: AugmentSpec) -> torch.Tensor:
    """What `DeviceAugment` uses on the CPU: `augment_cpu` for large outputs, the reference below."""
    impl = augment_cpu if spec.out_size >= CPU_PATH_MIN_SIZE else augment_reference
    return impl(images, params, spec)
