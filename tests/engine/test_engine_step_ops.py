"""The step's op choice under `--train.deterministic`, checked on the CPU by recording every aten op.

On CUDA, deterministic `index_add_` becomes `index_put_(accumulate=True)`, whose bounds check
reads to the host: a sync per step in eager and a failed CUDA-graph capture. The step must use
none of the ops that do that (nor `.item()`-style reads), with deterministic algorithms on and
with mixing, EMA and gradient clipping, the paths a graph captures. The GPU twin
(tests/engine/test_engine_graphs.py) captures with deterministic algorithms applied.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.options.config import Config
from engine.run.loop import Trainer
from models.registry import build_model

# Ops that read device values on the host, or whose deterministic CUDA path does.
SYNCING = ("index_add", "index_put", "_local_scalar_dense", "nonzero", "bincount", "scatter_add", "masked_select",
           "unique", "item")


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize("options", [dict(), dict(ema=0.9, mixup=0.4, cutmix=1.0), dict(clip=1.0)])
def test_deterministic_step_uses_no_host_reading_op(deterministic, options):
    torch.manual_seed(0)
    cfg = Config()
    cfg.train.deterministic = True
    cfg.train.ema = options.get("ema", 0.0)
    cfg.train.mixup, cfg.train.cutmix = options.get("mixup", 0.0), options.get("cutmix", 0.0)
    cfg.optim.clip_grad = options.get("clip", 0.0)
    model = build_model("seedcnn", 4, 16, dropout=0.0)
    trainer = Trainer(model, cfg, torch.device("cpu"), 4, steps_per_epoch=4)
    images = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 1, 2, 3, 3, 2, -1, -1])  # two padded rows
    trainer.train_step(images, labels)  # lazy optimizer state first
    with RecordOps() as ops:
        trainer.train_step(images, labels)
    bad = sorted(n for n in ops.names if any(s in n for s in SYNCING))
    assert not bad, bad
    stats = trainer.read_accumulators()
    # The per-class counters still count: 2 steps x 6 real rows, padded rows in no class.
    assert stats["seen"] == 12 and sum(trainer.acc["class_seen"].tolist()) == 12
    assert trainer.acc["class_seen"].tolist() == [2, 2, 4, 4]
