"""GPU paths: DALI with device="mixed" (nvJPEG) and torchvision's nvJPEG decode, on CUDA.

Skipped without a CUDA GPU (tests/conftest.py). The GPU decoders (nvJPEG, hardware or CUDA)
round differently from libjpeg-turbo, hence a looser pixel bound than the CPU parity test:
mean <= 3 and max <= 48 levels of 255 against the plain backend.
"""
import pytest
import torch

from engine.options.config import parse_args
from loaders import base
from loaders.datasets import load_dataset
from engine.options.resolve import loader_spec, sampler_spec

from conftest import needs

GPU_BACKENDS = [needs("dali"), needs("nvjpeg")]


@pytest.fixture
def on_gpu(tiny_csv):
    cfg = parse_args(["--data", str(tiny_csv), "--batch-size", "8", "--device", "cuda"]).config
    return cfg, load_dataset(cfg.data), torch.device("cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_BACKENDS)
def test_gpu_train_batches_bf16_channels_last_in_sampler_order(on_gpu, name):
    cfg, ds, device = on_gpu
    sampler = base.make_sampler(ds, sampler_spec(cfg), device)
    loader = base.build_loader(name, ds, "train", loader_spec(cfg), device, train=True, sampler=sampler, out_dtype=torch.bfloat16)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        order, _ = loader.epoch_order()
        for step, (images, labels) in enumerate(loader):
            assert images.device.type == "cuda" and labels.device.type == "cuda"
            assert images.shape == (8, 3, 32, 32) and images.dtype == torch.bfloat16
            assert images.is_contiguous(memory_format=torch.channels_last)
            assert torch.isfinite(images.float()).all()
            assert torch.equal(labels, loader.labels[order[step * 8:(step + 1) * 8]])


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_BACKENDS)
def test_gpu_eval_matches_plain(on_gpu, name):
    cfg, ds, device = on_gpu
    ref_x, ref_y = zip(*base.build_loader("plain", ds, "val", loader_spec(cfg), device, train=False))
    got_x, got_y = zip(*base.build_loader(name, ds, "val", loader_spec(cfg), device, train=False))
    assert torch.equal(torch.cat(got_y), torch.cat(ref_y))
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255
    diff = ((torch.cat(got_x) - torch.cat(ref_x)) * std).abs()[: len(ds.val)]
    assert diff.mean() <= 3 and diff.max() <= 48, (float(diff.mean()), float(diff.max()))


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_BACKENDS)
def test_gpu_bad_file_masked(on_gpu, name):
    cfg, ds, device = on_gpu
    open(ds.val.files[1], "wb").write(b"\xff\xd8\xff\xe0 not really a jpeg")
    loader = base.build_loader(name, ds, "val", loader_spec(cfg), device, train=False)
    labels = torch.cat([y for _, y in loader])
    assert labels[1] == -1 and labels[: len(ds.val)][labels[: len(ds.val)] >= 0].tolist() == \
        [y for i, y in enumerate(ds.val.labels.tolist()) if i != 1]
    assert list(loader.bad.items) == [ds.val.files[1]]


@pytest.mark.gpu
def test_auto_picks_a_gpu_decoder(tiny_csv):
    cfg = parse_args(["--data", str(tiny_csv), "--device", "cuda"]).config
    ds = load_dataset(cfg.data)
    name, why = base.choose_backend("auto", ds, torch.device("cuda"))
    assert name in ("dali", "nvjpeg", "tensor") and name != "baseline" and why
