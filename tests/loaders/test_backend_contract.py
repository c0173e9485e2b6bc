"""Every file backend keeps the batch contract and follows the engine's sampler order.

The order tests share one training loader per backend on one dataset (`train_loader`), as a run
reuses its loader across epochs, a resume and a broken-off epoch: each test starts with
`set_epoch`, the call a run makes. Building FFCV's loader compiles its pipeline with numba (about
8 CPU-s each, issue 25), so three loaders per backend cost three compilations for no more coverage."""
import pytest
import torch

from loaders import base
from loaders.datasets import load_dataset
from engine.options.resolve import loader_spec, sampler_spec

from conftest import ALL


@pytest.fixture(scope="module")
def train_loaders(tiny_shared):
    """name -> the training loader of `tiny_shared`, built on first use."""
    cfg, ds, device = tiny_shared
    built = {}

    def get(name):
        if name not in built:
            sampler = base.make_sampler(ds, sampler_spec(cfg), device)
            built[name] = base.build_loader(name, ds, "train", loader_spec(cfg), device, train=True, sampler=sampler)
        return built[name]

    return get


@pytest.mark.parametrize("name", ALL)
def test_train_batches_follow_sampler_order(tiny_shared, train_loaders, name):
    device = tiny_shared[2]
    loader = train_loaders(name)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        order, _ = loader.epoch_order()
        batches = list(loader)
        assert len(batches) == loader.steps >= 2
        for step, (images, labels) in enumerate(batches):
            assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
            assert images.is_contiguous(memory_format=torch.channels_last) and images.device == device
            assert torch.isfinite(images).all() and images.std() > 0.05
            # The labels are those of the sampler's indices, in the sampler's order.
            assert labels.dtype == torch.int64
            assert labels.tolist() == loader.labels[order[step * 8:(step + 1) * 8]].tolist()


@pytest.mark.parametrize("name", ALL)
def test_eval_keeps_dataset_order_and_pads(tiny_shared, name):
    cfg, ds, device = tiny_shared
    loader = base.build_loader(name, ds, "val", loader_spec(cfg), device, train=False)
    batches = list(loader)
    labels = torch.cat([y for _, y in batches])
    n = len(ds.val)
    assert len(labels) == loader.steps * 8 and all(x.shape == (8, 3, 32, 32) for x, _ in batches)
    assert labels[:n].tolist() == ds.val.labels.tolist() and (labels[n:] == -1).all()


@pytest.mark.parametrize("name", ALL)
def test_resume_mid_epoch_gives_the_remaining_batches(train_loaders, name):
    loader = train_loaders(name)
    loader.set_epoch(1)
    full = [y for _, y in loader]
    loader.set_epoch(1, start_step=1)
    rest = [y for _, y in loader]
    assert len(rest) == len(full) - 1
    assert all(torch.equal(a, b) for a, b in zip(rest, full[1:]))


@pytest.mark.parametrize("name", ALL)
def test_stopping_early_then_a_new_epoch(train_loaders, name):
    # A consumer that breaks off (early stopping, a benchmark) must not leave stale batches.
    loader = train_loaders(name)
    loader.set_epoch(0)
    next(iter(loader))
    loader.set_epoch(2)
    order, _ = loader.epoch_order()
    labels = [y for _, y in loader]
    assert torch.cat(labels).tolist() == loader.labels[order].tolist()


@pytest.mark.parametrize("name", [p for p in ALL if p.values[0] in ("dali", "nvjpeg")])
def test_half_precision_output(tiny_shared, name):
    cfg, ds, device = tiny_shared
    loader = base.build_loader(name, ds, "val", loader_spec(cfg), device, train=False, out_dtype=torch.bfloat16)
    images, _ = next(iter(loader))
    assert images.dtype == torch.bfloat16 and images.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", [p for p in ALL if p.values[0] != "plain"])
def test_in_memory_dataset_is_one_clear_error_or_works(tmp_path, name):
    import numpy as np
    from engine.options.config import ConfigError, parse_args

    x = np.random.default_rng(0).integers(0, 255, (40, 16, 16, 3), dtype=np.uint8)
    y = np.arange(40) % 2
    np.savez(tmp_path / "d.npz", train_images=x, train_labels=y)
    cfg = parse_args(["--data", str(tmp_path / "d.npz"), "--batch-size", "8", "--device", "cpu"]).config
    ds = load_dataset(cfg.data)
    try:
        loader = base.build_loader(name, ds, "val", loader_spec(cfg), torch.device("cpu"), train=False)
    except ConfigError as exc:
        assert "tensor loader" in str(exc)
        return
    assert next(iter(loader))[0].shape == (8, 3, 16, 16)


def test_auto_never_picks_baseline(tiny_shared):
    cfg, ds, device = tiny_shared
    for dev in (torch.device("cpu"), torch.device("cuda")):
        name, why = base.choose_backend("auto", ds, dev)
        assert name != "baseline" and why
    assert base.choose_backend("baseline", ds, device)[0] == "baseline"


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_crop_options_reach_the_augmentation(tiny, ratio):
    cfg, ds, device = tiny
    cfg.data.crop_scale_min, cfg.data.crop_ratio = 0.5, ratio
    sampler = base.make_sampler(ds, sampler_spec(cfg), device)
    loader = base.build_loader("plain", ds, "train", loader_spec(cfg), device, train=True, sampler=sampler)
    assert loader.spec.scale_min == 0.5 and loader.spec.ratio == (1 / ratio, ratio)
