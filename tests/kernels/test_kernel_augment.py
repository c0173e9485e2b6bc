"""The fused Triton augmentation kernel against `augment_reference`, and the reference itself."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernels.augment import AugmentSpec, DeviceAugment, augment_reference, draw_params, pick_impl, triton_available

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def random_batch(n, h, w, seed=0, device="cpu", channels_last=True):
    g = torch.Generator().manual_seed(seed)
    nhwc = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=g).to(device)
    return nhwc.permute(0, 3, 1, 2) if channels_last else nhwc.permute(0, 3, 1, 2).contiguous()


def needs_triton_on(device) -> None:
    # With a GPU present the interpreter is off (tests/kernels/conftest.py): CPU-tensor Triton
    # tests skip there rather than hand CPU tensors to compiled kernels.
    if not triton_available(device):
        pytest.skip(f"Triton cannot run on {torch.device(device).type} tensors here (TRITON_INTERPRET unset)")


def assert_matches_reference(images, spec, seed=0):
    needs_triton_on(images.device)
    fused = pick_impl("triton", images.device)
    params = draw_params(spec, images.shape[0], torch.Generator(images.device).manual_seed(seed), images.device)
    out = fused(images, params, spec)
    ref = augment_reference(images, params, dataclasses.replace(spec, out_dtype=torch.float32))
    assert out.shape == (images.shape[0], 3, spec.out_size, spec.out_size) and out.dtype == spec.out_dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    # fp32: float rounding only; fp16/bf16: one unit in the last place of the cast.
    rtol = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}[spec.out_dtype]
    torch.testing.assert_close(out.float(), ref, rtol=rtol, atol=2e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("jitter", [0.0, 0.4])
def test_fused_matches_reference_every_dtype(dtype, jitter):
    spec = AugmentSpec(out_size=19, jitter=jitter, out_dtype=dtype)
    assert_matches_reference(random_batch(3, 23, 31), spec)  # odd sizes, non-square input


@pytest.mark.parametrize("n,h,w,size", [(1, 9, 9, 7), (2, 17, 40, 33), (2, 32, 24, 16)])
def test_fused_odd_sizes_batch_of_one_upsampling(n, h, w, size):
    spec = AugmentSpec(out_size=size, jitter=0.3, scale_min=0.1)  # small, very non-square crops
    assert_matches_reference(random_batch(n, h, w, seed=n + h), spec, seed=h)


def test_fused_eval_mode_and_contiguous_nchw_input():
    spec = AugmentSpec(out_size=13, train=False, eval_crop=0.8, jitter=0.5)
    assert_matches_reference(random_batch(2, 21, 21, channels_last=False), spec)


def test_fused_on_real_jpegs(ham_dir):
    from loaders import images
    files = sorted((ham_dir).rglob("*.jpg"))[:2]
    arr = np.stack([images.decode(images.read_bytes(str(f)), 64) for f in files])
    batch = torch.from_numpy(arr).permute(0, 3, 1, 2)
    assert_matches_reference(batch, AugmentSpec(out_size=48, jitter=0.2, out_dtype=torch.bfloat16))


def test_reference_eval_is_bilinear_resize():
    x = random_batch(2, 20, 20)
    spec = AugmentSpec(out_size=12, train=False, mean=(0, 0, 0), std=(1, 1, 1))
    out = augment_reference(x, draw_params(spec, 2, torch.Generator(), "cpu"), spec)
    want = F.interpolate(x.float() / 255, size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-5)


def test_reference_flips_and_rotations_are_exact_without_crop():
    x = random_batch(1, 16, 16)
    spec = AugmentSpec(out_size=16, train=False, mean=(0, 0, 0), std=(1, 1, 1))
    base = draw_params(spec, 1, torch.Generator(), "cpu")
    plain = x.float() / 255
    for fx, fy, k in [(-1, 1, 0), (1, -1, 0), (1, 1, 1), (1, 1, 2), (1, 1, 3), (-1, 1, 1)]:
        p = base.clone()
        p[0, 4], p[0, 5], p[0, 6] = fx, fy, k
        out = augment_reference(x, p, spec)
        candidates = [torch.rot90(torch.flip(plain, d), r, (2, 3)) for d in [(), (3,), (2,)] for r in range(4)]
        assert any(torch.allclose(out, c, atol=1e-6) for c in candidates), (fx, fy, k)


def test_square_full_crop_is_lossless_dihedral_augmentation():
    # scale_min 1 and ratio 1 (`--data.crop_scale_min 1 --data.crop_ratio 1`): the geometry
    # is only flips and quarter turns, so every training image is its source, rearranged.
    x = random_batch(64, 12, 12, seed=3)
    spec = AugmentSpec(out_size=12, scale_min=1.0, ratio=(1.0, 1.0), mean=(0, 0, 0), std=(1, 1, 1))
    out = DeviceAugment(spec, seed=0, device="cpu", impl="reference")(x, 0)
    plain = x.float() / 255
    views = set()
    for i in range(len(x)):
        candidates = [torch.rot90(torch.flip(plain[i], d), r, (1, 2)) for d in [(), (2,)] for r in range(4)]
        match = [j for j, c in enumerate(candidates) if torch.allclose(out[i], c, atol=1e-6)]
        assert match, f"image {i} is not a flip/rotation of its source"
        views.add(match[0])
    assert len(views) == 8  # and all eight views occur


def test_same_key_same_batch_and_keys_differ():
    x = random_batch(4, 24, 24)
    spec = AugmentSpec(out_size=16, jitter=0.3)
    a, b = DeviceAugment(spec, seed=5, device="cpu"), DeviceAugment(spec, seed=5, device="cpu")
    assert torch.equal(a(x, 3), b(x, 3))
    assert torch.equal(a(x, 3), a(x, 3))
    assert not torch.equal(a(x, 3), a(x, 4))
    assert not torch.equal(a(x, 3), DeviceAugment(spec, seed=6, device="cpu")(x, 3))


def test_same_key_same_batch_fused():
    x = random_batch(2, 15, 15)
    spec = AugmentSpec(out_size=11, jitter=0.3)
    needs_triton_on("cpu")
    aug = DeviceAugment(spec, seed=1, device="cpu", impl="triton")
    assert torch.equal(aug(x, 7), aug(x, 7))


def test_impl_choice():
    assert pick_impl("reference", torch.device("cpu")) is augment_reference
    with pytest.raises(ValueError, match="impl"):
        pick_impl("fast", torch.device("cpu"))


def test_draw_params_ranges():
    spec = AugmentSpec(out_size=8, scale_min=0.3, jitter=0.2)
    p = draw_params(spec, 4000, torch.Generator().manual_seed(0), "cpu")
    area = p[:, 2] * p[:, 3]
    assert area.min() >= 0.3 * 0.75 - 1e-6 and area.max() <= 1 + 1e-6
    assert ((p[:, 0].abs() + p[:, 2]) <= 1 + 1e-6).all() and ((p[:, 1].abs() + p[:, 3]) <= 1 + 1e-6).all()
    assert set(p[:, 6].unique().tolist()) == {0.0, 1.0, 2.0, 3.0}
    assert set(p[:, 4].unique().tolist()) == {-1.0, 1.0}
    assert ((p[:, 7:] - 1).abs() <= 0.2 + 1e-6).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_cuda_matches_reference(dtype):
    spec = AugmentSpec(out_size=224, jitter=0.3, out_dtype=dtype)
    assert_matches_reference(random_batch(8, 250, 230, device="cuda"), spec)
    assert_matches_reference(random_batch(1, 31, 17, device="cuda"), AugmentSpec(out_size=9, out_dtype=dtype))


@pytest.mark.gpu
def test_fused_cuda_is_default_and_does_not_sync():
    spec = AugmentSpec(out_size=64, jitter=0.3, out_dtype=torch.bfloat16)
    aug = DeviceAugment(spec, seed=0, device="cuda")
    assert aug.impl.__name__ == "augment_triton"
    x = random_batch(16, 96, 96, device="cuda")
    aug(x, 0)  # compile outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = aug(x, 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(out, aug(x, 1))


def test_a_gpu_in_the_machine_does_not_send_cpu_tensors_to_compiled_triton(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not triton_available("cpu")
    with pytest.raises(RuntimeError, match="cpu tensors"):
        pick_impl("triton", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_available("cpu")
