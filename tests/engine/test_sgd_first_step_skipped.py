"""Fused SGD after a non-finite FIRST step: the skip must leave momentum that step 2 can read.

torch's fused SGD makes its momentum buffers on the first step with `empty_like` and then returns
early when `found_inf` is set, so without buffers made up front step 2 reads uninitialised memory.
"""
from __future__ import annotations

import torch

from engine.options.config import Config
from engine.run.loop import Trainer
from models.registry import build_model
from tests.helpers import step_batch

CLASSES, SIZE, BATCH = 5, 16, 8


def sgd_trainer() -> Trainer:
    torch.manual_seed(0)
    cfg = Config()
    cfg.optim.name, cfg.optim.momentum = "sgd", 0.9
    cfg.schedule.name, cfg.schedule.warmup_epochs = "constant", 0.0  # the same lr at step 1 and step 2
    model = build_model("seedcnn", CLASSES, SIZE, dropout=0.0)
    return Trainer(model, cfg, torch.device("cpu"), CLASSES, steps_per_epoch=10)


def batch(seed: int, poison: bool = False):
    return step_batch(seed, poison, BATCH, CLASSES, SIZE)


def _dirty_the_allocator(trainer: Trainer) -> None:
    # Freed NaN-filled blocks of the parameters' sizes: an `empty_like` made next is likely to
    # land on one of them, so reading it uninitialised shows instead of passing by luck.
    junk = [torch.full_like(p, float("nan")) for p in trainer.model.parameters() for _ in range(2)]
    del junk


def test_a_skipped_first_step_leaves_step_two_as_if_it_were_the_first():
    skipped = sgd_trainer()
    _dirty_the_allocator(skipped)
    skipped.train_step(*batch(5, poison=True))
    assert skipped.read_accumulators()["nonfinite"] == 1
    for state in skipped.optimizer.state.values():
        assert torch.count_nonzero(state["momentum_buffer"]) == 0
    skipped.train_step(*batch(6))

    fresh = sgd_trainer()
    fresh.train_step(*batch(6))
    for a, b in zip(skipped.model.parameters(), fresh.model.parameters()):
        assert torch.isfinite(a).all() and torch.equal(a, b)
    for a, b in zip(skipped.optimizer.state.values(), fresh.optimizer.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
