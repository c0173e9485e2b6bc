"""Shades of Gray on the device against the NumPy formulation of the ISIC pipelines."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kernels.augment import AugmentSpec, DeviceAugment
from kernels.color_constancy import shades_of_gray, shades_of_gray_reference


def _batch(images):
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def test_matches_the_numpy_reference_on_cast_images():
    rng = np.random.default_rng(0)
    images = []
    for _ in range(8):  # colour casts, dark and saturated images, one flat grey
        cast = rng.uniform(0.3, 1.0, 3)
        images.append((rng.integers(0, 256, (40, 48, 3)) * cast).astype(np.uint8))
    images.append(np.full((40, 48, 3), 128, np.uint8))
    got = shades_of_gray(_batch(images)).permute(0, 2, 3, 1).numpy()
    for g, im in zip(got, images):
        diff = np.abs(g.astype(int) - shades_of_gray_reference(im).astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float32 order of sums: at most one level, rarely


def test_matches_the_reference_on_real_dermoscopy(ham_dir):
    files = sorted((ham_dir / "images").glob("*.jpg"))[:4] or sorted(ham_dir.rglob("*.jpg"))[:4]
    images = [np.asarray(Image.open(f).convert("RGB").resize((224, 224))) for f in files]
    got = shades_of_gray(_batch(images)).permute(0, 2, 3, 1).numpy()
    for g, im in zip(got, images):
        assert np.abs(g.astype(int) - shades_of_gray_reference(im).astype(int)).max() <= 1


def test_removes_a_colour_cast_and_keeps_grey():
    rng = np.random.default_rng(1)
    scene = rng.integers(40, 200, (32, 32, 1)).repeat(3, -1).astype(np.float64)
    warm = (scene * [1.0, 0.8, 0.6]).astype(np.uint8)
    out = shades_of_gray(_batch([warm])).float().mean((0, 2, 3))
    assert (out.max() - out.min()) / out.mean() < 0.03   # the cast is gone: channels balanced
    grey = scene.astype(np.uint8)
    assert torch.equal(shades_of_gray(_batch([grey]))[0], _batch([grey])[0]) or \
        (shades_of_gray(_batch([grey])).int() - _batch([grey]).int()).abs().max() <= 1


def test_device_augment_applies_it_before_the_geometry():
    rng = np.random.default_rng(2)
    images = _batch([(rng.integers(0, 256, (16, 16, 3)) * [1, 0.7, 0.5]).astype(np.uint8) for _ in range(4)])
    spec = AugmentSpec(out_size=16, train=False, color_constancy=True)
    plain = DeviceAugment(AugmentSpec(out_size=16, train=False), 0, "cpu", impl="reference")
    with_cc = DeviceAugment(spec, 0, "cpu", impl="reference")
    assert torch.allclose(with_cc(images, 0), plain(shades_of_gray(images), 0))
    assert not torch.allclose(with_cc(images, 0), plain(images, 0))
