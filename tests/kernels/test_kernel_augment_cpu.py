"""The CPU augmentation (uint8 crop and resize) against `augment_reference`.

Tolerances: the CPU path snaps each crop box to whole pixels, resizes the crop alone (its
outermost output pixels blend with the crop's own edge, not the pixels beyond it, as
torchvision's crop-then-resize does) and rounds the result to uint8 with fixed-point weights.
On pixel-aligned boxes the interior of the output is then within one grey level. On arbitrary
boxes the crop moves by at most half a pixel per edge, which on smooth images changes a pixel by
a few grey levels (a sharp edge can move by a whole step, hence mean and 99th percentile, not
max).
"""
import math
import dataclasses

import numpy as np
import pytest
import torch

from kernels.augment import AugmentSpec, DeviceAugment, augment_reference, draw_params, pick_impl
from kernels.augment_cpu import CPU_PATH_MIN_SIZE, augment_cpu, augment_cpu_auto
from tests.kernels.test_kernel_augment import random_batch

GREY_LEVEL = 1 / (255 * min(AugmentSpec(8).std))  # one uint8 step after normalization, worst channel


def smooth_batch(n, size, seed=0):
    """Low-frequency colour images: what dermoscopy looks like at the scale of one pixel."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    phase = torch.rand(n, 3, 2, generator=g) * 6
    img = 127.5 + 100 * torch.sin(3 * xs + phase[..., 0, None, None]) * torch.cos(2 * ys + phase[..., 1, None, None])
    return img.round().to(torch.uint8).contiguous(memory_format=torch.channels_last)


def in_grey_levels(a, b):
    return (a.float() - b.float()).abs() / GREY_LEVEL


def aligned_params(n, size, seed=0):
    """Random boxes whose edges fall on pixel boundaries (each side at least a third of the
    image), random flips and rotations."""
    g = torch.Generator().manual_seed(seed)
    p = draw_params(AugmentSpec(size), n, g, "cpu")
    for i in range(n):
        left, top = torch.randint(0, size // 3, (2,), generator=g).tolist()
        right, bottom = (size - torch.randint(0, size // 3, (2,), generator=g)).tolist()
        p[i, 0], p[i, 2] = (left + right) / size - 1, (right - left) / size
        p[i, 1], p[i, 3] = (top + bottom) / size - 1, (bottom - top) / size
    return p


def test_every_flip_and_rotation_is_exact_without_crop():
    x = random_batch(1, 16, 16)
    spec = AugmentSpec(out_size=16)
    for fx in (-1, 1):
        for fy in (-1, 1):
            for k in range(4):
                p = torch.tensor([[0, 0, 1, 1, fx, fy, k, 1, 1, 1]], dtype=torch.float32)
                torch.testing.assert_close(augment_cpu(x, p, spec), augment_reference(x, p, spec),
                                           rtol=0, atol=1e-5, msg=f"fx={fx} fy={fy} k={k}")


@pytest.mark.parametrize("size,out", [(32, 32), (40, 24), (24, 56)])
def test_pixel_aligned_crops_match_to_rounding(size, out):
    x = random_batch(16, size, size, seed=size)  # noise: any misplaced pixel would show
    spec = AugmentSpec(out_size=out)
    p = aligned_params(16, size, seed=out)
    err = in_grey_levels(augment_cpu(x, p, spec), augment_reference(x, p, spec))
    # Output pixels within half a source pixel of the crop's edge read past it in the reference.
    edge = math.ceil(out / (size / 3) / 2) + 1
    assert err[..., edge:-edge, edge:-edge].max() <= 1 + 1e-3


@pytest.mark.parametrize("spec", [AugmentSpec(64), AugmentSpec(40), AugmentSpec(96, scale_min=0.1),
                                  AugmentSpec(64, train=False, eval_crop=0.875)],
                         ids=["same-size", "downscale", "small-crops", "eval-center-crop"])
def test_arbitrary_crops_within_half_pixel_tolerance(spec):
    x = smooth_batch(32, 64)
    p = draw_params(spec, 32, torch.Generator().manual_seed(3), "cpu")
    err = in_grey_levels(augment_cpu(x, p, spec), augment_reference(x, p, spec))
    assert err.mean() < 1.5 and torch.quantile(err.flatten()[::7], 0.99) < 6


def test_real_jpegs_within_tolerance(ham_dir):
    from loaders import images
    files = sorted(ham_dir.rglob("*.jpg"))[:16]
    x = torch.from_numpy(np.stack([images.decode(images.read_bytes(str(f)), 224) for f in files])).permute(0, 3, 1, 2)
    spec = AugmentSpec(224)
    p = draw_params(spec, len(files), torch.Generator().manual_seed(0), "cpu")
    err = in_grey_levels(augment_cpu(x, p, spec), augment_reference(x, p, spec))
    assert err.mean() < 1.5 and torch.quantile(err.flatten()[::11], 0.99) < 8


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("jitter", [0.0, 0.4])
def test_output_contract_every_dtype(dtype, jitter):
    x = random_batch(3, 23, 31, channels_last=False)  # odd, non-square, contiguous NCHW
    spec = AugmentSpec(out_size=19, jitter=jitter, out_dtype=dtype)
    p = draw_params(spec, 3, torch.Generator().manual_seed(1), "cpu")
    p[:, :4] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # whole image: only resize rounding differs
    out = augment_cpu(x, p, spec)
    assert out.shape == (3, 3, 19, 19) and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    ref = augment_reference(x, p, dataclasses.replace(spec, out_dtype=torch.float32))
    cast = {torch.float32: 0.0, torch.float16: 0.02, torch.bfloat16: 0.1}[dtype]  # ulp of the cast near |3|
    # Resizing 23x31 to 19x19 reads between pixels, so the fixed-point uint8 resize (weights and
    # result rounded) shows; jitter then scales that error by up to (1 + jitter)^3.
    assert in_grey_levels(out, ref).max() <= 1.5 * (1 + jitter) ** 3 + cast / GREY_LEVEL


def test_cpu_default_takes_the_faster_path_by_size():
    assert pick_impl("auto", torch.device("cpu")) is augment_cpu_auto
    for size, want in [(CPU_PATH_MIN_SIZE - 16, augment_reference), (CPU_PATH_MIN_SIZE, augment_cpu)]:
        x = random_batch(2, size, size)
        spec = AugmentSpec(out_size=size)
        p = draw_params(spec, 2, torch.Generator().manual_seed(0), "cpu")
        assert torch.equal(augment_cpu_auto(x, p, spec), want(x, p, spec))


def test_forced_cpu_path_is_deterministic_per_key():
    x = random_batch(4, 24, 24)
    spec = AugmentSpec(out_size=16, jitter=0.3)
    a, b = (DeviceAugment(spec, seed=5, device="cpu", impl="cpu") for _ in range(2))
    assert torch.equal(a(x, 3), b(x, 3)) and not torch.equal(a(x, 3), a(x, 4))


def test_eval_at_stored_size_is_the_identity_pass():
    x = random_batch(2, 20, 20)
    spec = AugmentSpec(out_size=20, train=False)
    p = draw_params(spec, 2, torch.Generator(), "cpu")
    assert torch.equal(augment_cpu(x, p, spec), augment_reference(x, p, spec))
