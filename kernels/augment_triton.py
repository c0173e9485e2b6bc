"""The fused augmentation kernel (Triton): one pass from a uint8 batch to the model's input.

Per output pixel it maps to the source through the sample's affine (crop + flips + rot90),
samples bilinearly with border clamping (grid_sample's align_corners=False convention),
applies brightness/contrast/saturation, normalizes, casts and writes channels-last: the
uint8 batch is read once and the output written once, with no float intermediate in memory.
Contrast needs each output image's mean grey level, so when jitter is on a first, cheaper
launch samples grey only and writes per-block partial sums (summed in torch: deterministic,
no atomics). `augment_reference` in kernels/augment.py defines the result; this file is
imported lazily, because `triton.jit` decides at decoration time whether to interpret.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _sample(base, s_c, s_h, s_w, x0, x1, y0, y1, wx, wy, c: tl.constexpr, mask):
    """Bilinear value of channel c in [0, 1] at the four neighbours' weights."""
    p = base + c * s_c
    v00 = tl.load(p + y0 * s_h + x0 * s_w, mask=mask, other=0).to(tl.float32)
    v01 = tl.load(p + y0 * s_h + x1 * s_w, mask=mask, other=0).to(tl.float32)
    v10 = tl.load(p + y1 * s_h + x0 * s_w, mask=mask, other=0).to(tl.float32)
    v11 = tl.load(p + y1 * s_h + x1 * s_w, mask=mask, other=0).to(tl.float32)
    top = v00 * (1 - wx) + v01 * wx
    bottom = v10 * (1 - wx) + v11 * wx
    return (top * (1 - wy) + bottom * wy) * (1.0 / 255.0)


@triton.jit
def _augment_kernel(img, s_n, s_c, s_h, s_w, H, W, theta, color, partial, out, S,
                    m0, m1, m2, inv0, inv1, inv2,
                    STATS: tl.constexpr, JITTER: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    b = tl.program_id(0)
    blk = tl.program_id(1)
    offs = blk * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < S * S
    i = offs // S
    j = offs % S
    # Output pixel centre in [-1, 1] (affine_grid, align_corners=False).
    xn = (2 * j + 1).to(tl.float32) / S - 1.0
    yn = (2 * i + 1).to(tl.float32) / S - 1.0
    t = theta + b * 6
    gx = tl.load(t + 0) * xn + tl.load(t + 1) * yn + tl.load(t + 2)
    gy = tl.load(t + 3) * xn + tl.load(t + 4) * yn + tl.load(t + 5)
    # Source coordinates, clamped to the border (padding_mode="border").
    ix = tl.minimum(tl.maximum(((gx + 1.0) * W - 1.0) * 0.5, 0.0), (W - 1).to(tl.float32))
    iy = tl.minimum(tl.maximum(((gy + 1.0) * H - 1.0) * 0.5, 0.0), (H - 1).to(tl.float32))
    fx = tl.floor(ix)
    fy = tl.floor(iy)
    wx = ix - fx
    wy = iy - fy
    x0 = fx.to(tl.int32)
    y0 = fy.to(tl.int32)
    x1 = tl.minimum(x0 + 1, W - 1)
    y1 = tl.minimum(y0 + 1, H - 1)
    base = img + b.to(tl.int64) * s_n
    r = _sample(base, s_c, s_h, s_w, x0, x1, y0, y1, wx, wy, 0, mask)
    g = _sample(base, s_c, s_h, s_w, x0, x1, y0, y1, wx, wy, 1, mask)
    bl = _sample(base, s_c, s_h, s_w, x0, x1, y0, y1, wx, wy, 2, mask)
    if STATS:
        grey = tl.where(mask, 0.299 * r + 0.587 * g + 0.114 * bl, 0.0)
        tl.store(partial + b * tl.num_programs(1) + blk, tl.sum(grey, axis=0))
    else:
        if JITTER:
            cp = color + b * 4
            bright = tl.load(cp + 0)
            contrast = tl.load(cp + 1)
            sat = tl.load(cp + 2)
            mean = tl.load(cp + 3)  # grey mean after brightness
            r = (r * bright - mean) * contrast + mean
            g = (g * bright - mean) * contrast + mean
            bl = (bl * bright - mean) * contrast + mean
            grey = 0.299 * r + 0.587 * g + 0.114 * bl
            r = tl.minimum(tl.maximum(grey + (r - grey) * sat, 0.0), 1.0)
            g = tl.minimum(tl.maximum(grey + (g - grey) * sat, 0.0), 1.0)
            bl = tl.minimum(tl.maximum(grey + (bl - grey) * sat, 0.0), 1.0)
        dst = out + (b.to(tl.int64) * S * S + offs) * 3
        kind = out.dtype.element_ty
        tl.store(dst + 0, ((r - m0) * inv0).to(kind), mask=mask)
        tl.store(dst + 1, ((g - m1) * inv1).to(kind), mask=mask)
        tl.store(dst + 2, ((bl - m2) * inv2).to(kind), mask=mask)


def augment_triton(images: torch.Tensor, params: torch.Tensor, spec) -> torch.Tensor:
    """Same contract as `augment_reference`: uint8 (n, 3, H, W), any strides -> channels_last."""
    from kernels.augment_reference import affine_from_params

    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"augment_triton expects uint8 (n, 3, H, W); got {images.dtype} {tuple(images.shape)}")
    n, _, H, W = images.shape
    S = spec.out_size
    theta = affine_from_params(params).reshape(n, 6).contiguous()
    # NHWC storage viewed as NCHW: channels_last, which is what the model wants.
    out = torch.empty(n, S, S, 3, dtype=spec.out_dtype, device=images.device).permute(0, 3, 1, 2)
    jitter = bool(spec.train and spec.jitter > 0)
    blocks = triton.cdiv(S * S, BLOCK)
    mean = [float(m) for m in spec.mean]
    inv = [1.0 / float(s) for s in spec.std]
    strides = images.stride()
    color = params  # placeholder pointer when jitter is off (never read)
    partial = theta
    if jitter:
        partial = torch.empty(n, blocks, dtype=torch.float32, device=images.device)
        _augment_kernel[(n, blocks)](images, *strides, H, W, theta, theta, partial, out, S,
                                     *mean, *inv, STATS=True, JITTER=False, BLOCK_SIZE=BLOCK)
        grey_mean = partial.sum(1) / (S * S) * params[:, 7]
        color = torch.stack([params[:, 7], params[:, 8], params[:, 9], grey_mean], 1).contiguous()
    _augment_kernel[(n, blocks)](images, *strides, H, W, theta, color, partial, out, S,
                                 *mean, *inv, STATS=False, JITTER=jitter, BLOCK_SIZE=BLOCK)
    return out
