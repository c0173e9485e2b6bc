"""The train step on the CPU: non-finite skips, EMA, mixing, clipping, AMP, no host syncs."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.options.config import Config
from engine.run.loop import Mixer, Trainer
from models.registry import build_model
from tests.helpers import step_batch

CLASSES, SIZE, BATCH = 5, 16, 8


def make_trainer(**train) -> Trainer:
    torch.manual_seed(0)
    cfg = Config()
    cfg.train.epochs = 2
    for key, value in train.items():
        section, name = key.split("__") if "__" in key else ("train", key)
        setattr(getattr(cfg, section), name, value)
    model = build_model("seedcnn", CLASSES, SIZE, dropout=0.1)
    return Trainer(model, cfg, torch.device("cpu"), CLASSES, steps_per_epoch=10)


def batch(seed: int = 1, poison: bool = False):
    return step_batch(seed, poison, BATCH, CLASSES, SIZE)


def snapshot(trainer: Trainer) -> dict:
    state = {f"p{i}": p.detach().clone() for i, p in enumerate(trainer.model.parameters())}
    state |= {f"b{i}": b.clone() for i, b in enumerate(trainer.model.buffers())}  # BatchNorm stats
    for i, s in enumerate(trainer.optimizer.state.values()):
        state |= {f"s{i}.{k}": v.clone() for k, v in s.items() if torch.is_tensor(v)}
    if trainer.ema is not None:
        state |= {f"e{i}": e.clone() for i, e in enumerate(trainer.ema)}
    return state


@pytest.mark.parametrize("options", [dict(), dict(optim__name="sgd"), dict(ema=0.9),
                                     dict(optim__clip_grad=1.0), dict(mixup=0.4, cutmix=1.0)])
def test_non_finite_loss_skips_the_whole_update(options):
    trainer = make_trainer(**options)
    for seed in range(2):  # optimizer state exists before the bad step
        trainer.train_step(*batch(seed))
    before = snapshot(trainer)
    trainer.train_step(*batch(5, poison=True))
    after = snapshot(trainer)
    assert before.keys() == after.keys() and len(before) > 0
    for key in before:  # weights, BN stats, moments, AdamW step count, EMA: untouched
        assert torch.equal(before[key], after[key]), key
    stats = trainer.read_accumulators()
    assert stats["nonfinite"] == 1 and stats["nonfinite_streak"] == 1
    assert stats["seen"] == 3 * BATCH and stats["loss"] == pytest.approx(stats["loss"]) and stats["loss"] > 0
    trainer.train_step(*batch(6))  # a good step resumes training and ends the streak
    assert trainer.read_accumulators()["nonfinite_streak"] == 0
    assert not torch.equal(before["p0"], next(trainer.model.parameters()))


def test_streak_counts_consecutive_bad_steps_only():
    trainer = make_trainer()
    for poison in (True, True, False, True, True, True):
        trainer.train_step(*batch(poison=poison))
    stats = trainer.read_accumulators()
    assert stats["nonfinite"] == 5 and stats["nonfinite_streak"] == 3


def test_learning_rate_follows_the_device_table():
    trainer = make_trainer(schedule__name="cosine", schedule__warmup_epochs=0.5)
    seen = []
    for _ in range(7):
        trainer.train_step(*batch())
        seen.append(float(trainer.optimizer.param_groups[0]["lr"]))
    expected = trainer.lr_table[:7].tolist()
    assert seen == pytest.approx(expected)
    assert expected[0] < expected[4] and max(expected) == pytest.approx(trainer.base_lr, rel=1e-6)


def test_ema_tracks_weights_with_the_scheduled_decay():
    trainer = make_trainer(ema=0.5)
    start = [e.clone() for e in trainer.ema]
    trainer.train_step(*batch())
    decay = float(trainer.ema_table[0])  # min(0.5, 1/10)
    assert decay == pytest.approx(0.1)
    live = list(trainer.model.state_dict().values())
    for e, s, w in zip(trainer.ema, start, live):
        if e.is_floating_point():
            torch.testing.assert_close(e, decay * s + (1 - decay) * w)
        else:
            assert torch.equal(e, w)


def test_mixer_mixes_with_the_mirrored_sample_and_keeps_shapes():
    torch.manual_seed(0)
    images, labels = batch()
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0), (0.4, 1.0)):
        mixed, partner, lam = Mixer(mixup, cutmix, torch.device("cpu"))(images, labels)
        assert mixed.shape == images.shape and mixed.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(partner, labels.flip(0)) and 0 <= float(lam) <= 1
        if cutmix and not mixup:  # every pixel comes from one of the two images, lam = kept area
            from_self = (mixed == images).all(1)
            assert float(lam) == pytest.approx(from_self.float().mean().item(), abs=1e-6)
        if mixup and not cutmix:
            torch.testing.assert_close(mixed, images * lam + images.flip(0) * (1 - lam))


def test_label_smoothing_and_mixing_change_the_loss():
    plain, smooth = make_trainer(), make_trainer(optim__label_smoothing=0.2)
    for t in (plain, smooth):
        t.train_step(*batch())
    assert plain.read_accumulators()["loss"] != smooth.read_accumulators()["loss"]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_amp_step_trains(dtype):
    trainer = make_trainer(amp=True, amp_dtype=dtype)
    assert (trainer.scaler is not None) == (dtype == "fp16")
    before = next(trainer.model.parameters()).detach().clone()
    for seed in range(3):
        trainer.train_step(*batch(seed))
    assert not torch.equal(before, next(trainer.model.parameters()))
    assert trainer.read_accumulators()["nonfinite"] == 0


class RefuseHostReads(TorchDispatchMode):
    """Every path from a tensor value to the host (`.item()`, `bool(t)`, a 0-d tensor passed where
    a Python number is expected, `t[tensor]`) runs one of these ops: on CUDA each is a sync."""

    READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default,
             torch.ops.aten.equal.default)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            raise AssertionError(f"host sync inside the step: {func}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("options", [dict(ema=0.9, mixup=0.4, cutmix=1.0, optim__clip_grad=1.0),
                                     dict(optim__name="sgd", schedule__name="onecycle"),
                                     dict(amp=True, amp_dtype="fp16", optim__clip_grad=1.0)])
def test_step_never_reads_a_tensor_on_the_host(options):
    trainer = make_trainer(**options)
    trainer.train_step(*batch())  # lazy optimizer and scaler state first
    with RefuseHostReads():
        trainer.train_step(*batch(2))
        trainer.train_step(*batch(3, poison=True))
    stats = trainer.read_accumulators()
    assert stats["seen"] == 3 * BATCH and stats["nonfinite"] == 1


def test_train_balanced_accuracy_counts_per_class_and_ignores_padding():
    trainer = make_trainer()
    head = trainer.model[-1]  # the classifier: always predict class 0
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([100.0] + [0.0] * (CLASSES - 1)))
    trainer.lr_table.zero_()  # learning rate 0: the prediction survives the step
    images, _ = batch(3)
    labels = torch.tensor([0, 0, 0, 1, 2, 2, -1, -1])  # 3 of class 0, 1 of 1, 2 of 2, 2 padded rows
    trainer.train_step(images, labels)
    stats = trainer.read_accumulators()
    from sklearn.metrics import balanced_accuracy_score
    real = labels[labels >= 0]
    assert stats["accuracy"] == pytest.approx(3 / 6)
    assert stats["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(real, torch.zeros_like(real)))  # 1/3
    trainer.reset_accumulators()
    assert trainer.read_accumulators()["balanced_accuracy"] == 0.0
