"""Both foundation backends meet the batch contract: device, dtype, memory format, fixed shape."""
import numpy as np
import pytest
import torch

from engine.options.config import parse_args
from loaders import base
from loaders.datasets import load_dataset
from engine.options.resolve import loader_spec, sampler_spec


@pytest.fixture
def setup(tiny_csv):
    cfg = parse_args(["--data", str(tiny_csv), "--batch-size", "8", "--image-size", "24", "--device", "cpu"]).config
    ds = load_dataset(cfg.data)
    return cfg, ds, torch.device("cpu")


@pytest.mark.parametrize("name", ["plain", "tensor"])
def test_train_batches_fixed_shape_channels_last(setup, name):
    cfg, ds, device = setup
    sampler = base.make_sampler(ds, sampler_spec(cfg), device)
    loader = base.build_loader(name, ds, "train", loader_spec(cfg), device, train=True, sampler=sampler)
    batches = list(loader)
    assert len(batches) == loader.steps >= 1
    for images, labels in batches:
        assert images.shape == (8, 3, 24, 24) and images.dtype == torch.float32
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert labels.dtype == torch.int64 and labels.device == device and (labels >= 0).all()


@pytest.mark.parametrize("name", ["plain", "tensor"])
def test_eval_pads_last_batch_with_masked_labels(setup, name):
    cfg, ds, device = setup
    loader = base.build_loader(name, ds, "val", loader_spec(cfg), device, train=False)
    labels = torch.cat([y for _, y in loader])
    n = len(ds.val)
    assert len(labels) == loader.steps * 8 and (labels[:n] >= 0).all() and (labels[n:] == -1).all()
    assert labels[:n].tolist() == ds.val.labels.tolist()  # evaluation keeps dataset order


def test_plain_and_tensor_agree_in_eval_mode(setup):
    cfg, ds, device = setup
    a = torch.cat([x for x, _ in base.build_loader("plain", ds, "test", loader_spec(cfg), device, train=False)])
    b = torch.cat([x for x, _ in base.build_loader("tensor", ds, "test", loader_spec(cfg), device, train=False)])
    assert torch.equal(a, b)


def test_same_seed_same_epoch_same_batches(setup):
    cfg, ds, device = setup
    def first_batch():
        loader = base.build_loader("tensor", ds, "train", loader_spec(cfg), device, train=True, sampler=base.make_sampler(ds, sampler_spec(cfg), device))
        loader.set_epoch(3)
        return next(iter(loader))
    (x1, y1), (x2, y2) = first_batch(), first_batch()
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_resume_mid_epoch_yields_the_remaining_batches(setup):
    cfg, ds, device = setup
    loader = base.build_loader("tensor", ds, "train", loader_spec(cfg), device, train=True, sampler=base.make_sampler(ds, sampler_spec(cfg), device))
    loader.set_epoch(1)
    full = list(loader)
    loader.set_epoch(1, start_step=1)
    rest = list(loader)
    assert len(rest) == len(full) - 1 and all(torch.equal(a[0], b[0]) for a, b in zip(full[1:], rest))


def test_auto_picks_tensor_on_cpu_and_explains(setup):
    cfg, ds, device = setup
    name, why = base.choose_backend("auto", ds, device)
    assert name == "tensor" and "fit in memory" in why


def test_auto_streams_many_files_on_cpu_and_says_why(setup, monkeypatch):
    """Decoding every file before the first step is minutes at ISIC 2024's size on a CPU: plain."""
    cfg, ds, device = setup
    monkeypatch.setattr(base, "CPU_DECODE_ONCE_MAX", len(ds.train) + len(ds.val) + len(ds.test) - 1)
    name, why = base.choose_backend("auto", ds, device)
    assert name == "plain" and "before the first step" in why
