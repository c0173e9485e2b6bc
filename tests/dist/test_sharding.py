"""Every backend shards through the base loader: per-rank batch, disjoint eval blocks, rank keys."""
from __future__ import annotations

import pytest
import torch

from engine.options.config import parse_args
from loaders import base
from loaders.datasets import load_dataset
from engine.options.resolve import loader_spec, sampler_spec

WORLD = 2


@pytest.fixture
def setup(tiny_csv):
    cfg = parse_args(["--data", str(tiny_csv), "--batch-size", "8", "--image-size", "16", "--device", "cpu",
                      "--data.eval_batch_size", "6"]).config
    return cfg, load_dataset(cfg.data), torch.device("cpu")


def _as_rank(monkeypatch, rank: int) -> None:
    monkeypatch.setattr(base, "shard_of", lambda sampler: (sampler.rank, sampler.world_size) if sampler else (rank, WORLD))


@pytest.mark.parametrize("name", ["plain", "tensor"])
def test_eval_shards_are_contiguous_blocks_that_rebuild_the_split(setup, monkeypatch, name):
    cfg, ds, device = setup
    real_labels, steps = [], set()
    for rank in range(WORLD):
        _as_rank(monkeypatch, rank)
        loader = base.build_loader(name, ds, "val", loader_spec(cfg), device, train=False)
        assert loader.batch_size == 3  # the global eval batch of 6, halved
        labels = torch.cat([y for _, y in loader])
        steps.add(loader.steps)
        assert len(labels) == loader.steps * loader.batch_size  # fixed shape, padded with -1
        real_labels.append(labels[labels >= 0])
    assert len(steps) == 1  # equal step counts: no rank waits in a collective for another
    assert torch.cat(real_labels).tolist() == ds.val.labels.tolist()


@pytest.mark.parametrize("name", ["plain", "tensor"])
def test_train_shards_take_half_the_global_batch_with_their_own_augmentation(setup, name):
    cfg, ds, device = setup
    loaders = []
    for rank in range(WORLD):
        sampler = base.make_sampler(ds, sampler_spec(cfg), device, rank, WORLD)
        loaders.append(base.build_loader(name, ds, "train", loader_spec(cfg), device, train=True, sampler=sampler))
    assert [l.batch_size for l in loaders] == [4, 4] and loaders[0].steps == len(ds.train) // 8
    assert loaders[0].key(3) != loaders[1].key(3)  # rows of the two ranks get different crops
    single = base.build_loader(name, ds, "train", loader_spec(cfg), device, train=True, sampler=base.make_sampler(ds, sampler_spec(cfg), device))
    assert single.key(3) == 3 and single.batch_size == 8  # one process: unchanged keys and batch
    orders = [l.epoch_order()[0] for l in loaders]
    assert torch.equal(torch.cat(orders), single.epoch_order()[0])
