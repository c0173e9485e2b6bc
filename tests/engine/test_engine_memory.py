"""Peak memory figures, the bounded host allocator and the activation-fit warning (issue 19)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from engine.run import memory
from models.registry import build_model


def test_peak_memory_keys_grow_with_a_large_allocation():
    import psutil
    now_mb = psutil.Process().memory_info().rss / 2**20
    before = memory.peak_memory("cpu")
    assert set(before) == {"memory.peak_rss_mb", "memory.peak_device_mb"}
    assert before["memory.peak_device_mb"] == 0.0 and before["memory.peak_rss_mb"] > 10
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    after = memory.peak_memory("cpu")["memory.peak_rss_mb"]
    del block
    assert after >= now_mb + 250  # the peak saw the 300 MiB on top of what was resident


def test_bounded_allocator_returns_freed_blocks_to_the_system():
    import psutil
    assert memory.bound_host_allocator()
    proc = psutil.Process()
    base = proc.memory_info().rss
    blocks = [torch.ones(64, 3, 224, 224) for _ in range(12)]  # 12 x 38.5 MB, each below the mmap bound
    held = proc.memory_info().rss
    pinned_above = torch.ones(1 << 18)  # a live block above the freed ones: the heap top cannot shrink
    del blocks
    assert memory.release_freed_host_memory()
    freed = proc.memory_info().rss
    assert held - base > 300 * 2**20
    # The old policy (trim and mmap thresholds at 1 GiB) kept all 460 MB resident after the free.
    assert freed - base < memory.TRIM_ABOVE + 64 * 2**20
    del pinned_above


def test_activation_estimate_scales_with_the_batch_and_leaves_batchnorm_alone():
    model = build_model("seedcnn", 7, 64).train()
    stats = [b.clone() for b in model.buffers()]
    small, medium, large = (memory.activation_mb(model, torch.randn(n, 3, 64, 64)) for n in (2, 8, 14))
    # Linear in the batch (the saved weights are the constant part): equal steps, equal growth.
    assert small > 0 and medium - small > 0 and (large - medium) == pytest.approx(medium - small, rel=0.01)
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))


def test_a_batch_that_will_not_fit_is_logged(monkeypatch, caplog):
    model = build_model("seedcnn", 7, 64).train()
    monkeypatch.setattr(memory, "available_mb", lambda device: 1.0)
    with caplog.at_level(logging.WARNING, logger="medtrain.memory"):
        assert not memory.warn_if_batch_will_not_fit(model, torch.randn(2, 3, 64, 64), 512, torch.device("cpu"))
    assert "lower --batch-size" in caplog.text
    monkeypatch.setattr(memory, "available_mb", lambda device: 1e9)
    assert memory.warn_if_batch_will_not_fit(model, torch.randn(2, 3, 64, 64), 512, torch.device("cpu"))


def test_activation_estimate_leaves_the_random_state_alone():
    # A deterministic run must train the same with the check as without: dropout draws from a fork.
    model = build_model("seedcnn", 7, 32, dropout=0.5).train()
    batch = torch.randn(2, 3, 32, 32)
    state = torch.get_rng_state()
    memory.activation_mb(model, batch)
    assert torch.equal(state, torch.get_rng_state())


def test_building_a_training_run_tells_the_user_when_the_batch_will_not_fit(monkeypatch, caplog):
    from engine.run.build import build
    from engine.options.config import parse_args
    from engine_testkit import FAST
    cfg = parse_args(FAST).config
    monkeypatch.setattr(memory, "available_mb", lambda device: 0.01)
    with caplog.at_level(logging.WARNING, logger="medtrain.memory"):
        build(cfg, splits=("val",))  # evaluation only: no training batch to hold
        assert "lower --batch-size" not in caplog.text
        build(cfg)
    assert "batch 12 needs" in caplog.text and "lower --batch-size" in caplog.text
