"""Per-batch device augmentation, CLAHE included, without a host sync (needs CUDA).

The defects: CLAHE moved a CPU scale tensor to the device per batch and evaluation built its
crop parameters with `torch.tensor([...], device="cuda")` per batch; both are copies from
pageable memory that wait for the stream. After a first batch (the constants are cached
then), further batches must pass `set_sync_debug_mode("error")`.
"""
from __future__ import annotations

import pytest
import torch

from kernels.augment import AugmentSpec, DeviceAugment
from kernels.clahe import clahe_rgb

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_augment_with_clahe_does_not_sync(train):
    spec = AugmentSpec(out_size=64, train=train, jitter=0.3 if train else 0.0, clahe=True, out_dtype=torch.bfloat16)
    aug = DeviceAugment(spec, seed=0, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 96, 96), dtype=torch.uint8, device="cuda", generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    first = aug(x, 0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        again = aug(x, 0)
        other = aug(x, 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(first, again) and other.shape == first.shape


def test_cuda_clahe_matches_cpu_clahe():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (4, 3, 70, 90), dtype=torch.uint8, generator=g)
    # Same integer histograms and tables; the bilinear blend may round one level apart (FMA).
    diff = (clahe_rgb(x.cuda()).cpu().int() - clahe_rgb(x).int()).abs()
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01
