"""DALI's source callback runs on the training thread each batch: it must not touch the disk."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from engine.options.resolve import loader_spec, sampler_spec
from loaders import base, images

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nvidia.dali") is None, reason="nvidia.dali not installed")


def test_dali_epochs_read_no_file_after_the_loader_is_built(tiny, monkeypatch):
    cfg, ds, device = tiny
    loader = base.build_loader("dali", ds, "train", loader_spec(cfg), device, train=True, sampler=base.make_sampler(ds, sampler_spec(cfg), device))
    reads = []
    monkeypatch.setattr(images, "read_bytes", lambda path: reads.append(path) or b"")
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        batches = [(x, y) for x, y in loader]
        assert len(batches) == loader.steps and all(torch.isfinite(x.float()).all() for x, _ in batches)
    assert reads == []
