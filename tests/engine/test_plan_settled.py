"""Calibration stops as soon as more timing cannot change the plan: an upper bound from the
2-image scout settles a candidate whose every choice is already taken (engine/plan/calibrate.py)."""
from __future__ import annotations

import numpy as np
import torch

from engine.options.config import parse_args
from engine.plan import calibrate, plan
from engine_testkit import record_calibration_batches
from loaders.datasets import Dataset, Split

CPU = torch.device("cpu")


def test_a_bound_under_the_settled_cost_skips_the_probe_batch_and_is_an_upper_bound(monkeypatch):
    batches = record_calibration_batches(monkeypatch)
    bound = calibrate.seconds_per_image("mlp", 8, 3, CPU, batch=32, seconds=0.05, settled_below=10.0)
    assert set(batches) == {calibrate.SCOUT_IMAGES}  # settled by the scout: no 32-image step
    batches.clear()
    measured = calibrate.seconds_per_image("mlp", 8, 3, CPU, batch=32, seconds=0.05, settled_below=1e-12)
    assert 32 in batches  # a bound above the settled cost: timed on the full probe batch
    assert 0 < measured <= bound


def test_the_augmentation_is_settled_by_the_same_rule(monkeypatch):
    calls = []
    real = calibrate.DeviceAugment

    class Recording(real):
        def __call__(self, images, key):
            calls.append(images.shape[0])
            return super().__call__(images, key)

    monkeypatch.setattr(calibrate, "DeviceAugment", Recording)
    spec = plan._augment_spec(parse_args(["--data", "x.npz"]).config, {"native_size": 96, "colour": True,
                              "illuminant_spread": 0.0, "asymmetry": {"hflip": 0, "vflip": 0, "rot90": 0}}, 64)
    bound = calibrate.input_seconds_per_image(96, spec, CPU, batch=16, seconds=0.05, settled_below=10.0)
    assert set(calls) == {calibrate.SCOUT_IMAGES}
    calls.clear()
    measured = calibrate.input_seconds_per_image(96, spec, CPU, batch=16, seconds=0.05, settled_below=1e-12)
    assert 16 in calls and 0 < measured <= bound


def test_a_small_set_is_planned_from_bounds_to_the_epoch_cap(tmp_path, monkeypatch):
    """A few dozen images in an hour's budget: the cap binds whatever the exact cost (even on a
    machine slowed 100-fold), so the plan is the one full timing would give, without a probe batch."""
    batches = record_calibration_batches(monkeypatch)
    rng = np.random.default_rng(0)
    split = Split(labels=np.arange(48) % 3, images=rng.integers(0, 255, (48, 16, 16, 3), dtype=np.uint8))
    ds = Dataset("t", "t", ["a", "b", "c"], split, split.subset(np.arange(12)), split.subset(np.arange(12)), 16)
    parsed = parse_args(["--data", "x.npz", "--model", "mlp", "--budget", "60"])
    new = plan.planned(parsed.config, parsed.explicit, ds, CPU, tmp_path)
    assert set(batches) == {calibrate.SCOUT_IMAGES}
    assert new.train.epochs == plan.MAX_EPOCHS
