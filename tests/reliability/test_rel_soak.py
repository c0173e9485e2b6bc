"""Soak: many short epochs on the synthetic data with process memory (RSS) and, on a GPU,
device memory sampled at every epoch end. After a warm-up, memory must stay flat within a
stated bound, so a leak (a tensor kept per epoch, a growing history) fails the test.

CI runs SOAK_EPOCHS (40, under a minute here); `MEDTRAIN_SOAK_EPOCHS=2000` runs a long one.
The report figures at the end are left out: they run once per run, not per epoch.
"""
from __future__ import annotations

import os
import re

import numpy as np
import psutil
import pytest
import torch

from engine.run import runner
from engine.output import writer
from engine.train import main

from . import broken

SOAK_EPOCHS = int(os.environ.get("MEDTRAIN_SOAK_EPOCHS", "40"))
WARMUP_EPOCHS = 10  # allocator pools, lazy imports and first-use caches settle by then
MiB = 2**20
# The bounds: after warm-up, total growth and the fitted growth per epoch. A leak of one
# 1 MiB buffer per epoch breaks the slope bound within 30 epochs.
RSS_GROWTH_LIMIT = 24 * MiB
RSS_SLOPE_LIMIT = 256 * 1024  # bytes per epoch
DEVICE_GROWTH_LIMIT = 4 * MiB


def _soak(tmp_path, monkeypatch, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """Run `epochs` epochs; return RSS and device-memory samples taken at each epoch end."""
    process = psutil.Process()
    rss, device_mem = [], []
    real_append = writer.append_jsonl  # the run's writer appends one history row per epoch end

    def sample_then_append(path, row):  # called once per epoch end, by the main process
        rss.append(process.memory_info().rss)
        device_mem.append(torch.cuda.memory_allocated() if torch.cuda.is_available() else 0)
        real_append(path, row)

    monkeypatch.setattr(writer, "append_jsonl", sample_then_append)
    monkeypatch.setattr(runner.run_report, "build_or_warn", lambda out: None)
    args = ["--data", "synthetic", "--data.synthetic_count", "40", "--model", "mlp", "--image-size", "16",
            "--batch-size", "8", "--epochs", str(epochs), "--wandb", "disabled", "--train.progress", "off",
            "--data.workers", "1", "--out", str(tmp_path / "soak"), "--schedule.name", "constant"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is as fast and immune to a busy machine
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    assert len(rss) == epochs
    return np.array(rss, np.float64), np.array(device_mem, np.float64)


def memory_problems(rss: np.ndarray, device_mem: np.ndarray) -> list[str]:
    """The bound, checked on the post-warm-up samples; empty when memory stayed flat."""
    problems = []
    steady = rss[WARMUP_EPOCHS:]
    growth = steady.max() - steady[0]
    slope = np.polyfit(np.arange(len(steady)), steady, 1)[0]
    if growth > RSS_GROWTH_LIMIT:
        problems.append(f"RSS grew {growth / MiB:.1f} MiB after warm-up (limit {RSS_GROWTH_LIMIT / MiB:.0f})")
    if slope > RSS_SLOPE_LIMIT:
        problems.append(f"RSS grows {slope / 1024:.0f} KiB per epoch (limit {RSS_SLOPE_LIMIT / 1024:.0f})")
    device_growth = device_mem[WARMUP_EPOCHS:].max() - device_mem[WARMUP_EPOCHS]
    if device_growth > DEVICE_GROWTH_LIMIT:
        problems.append(f"device memory grew {device_growth / MiB:.1f} MiB after warm-up")
    return problems


def test_soak_memory_stays_flat_and_the_bound_catches_a_leak(tmp_path, monkeypatch):
    rss, device_mem = _soak(tmp_path, monkeypatch, SOAK_EPOCHS)
    print(f"RSS MiB at epochs 1/{WARMUP_EPOCHS}/{SOAK_EPOCHS}: {rss[0] / MiB:.1f} / {rss[WARMUP_EPOCHS - 1] / MiB:.1f} "
          f"/ {rss[-1] / MiB:.1f}; device MiB at the end {device_mem[-1] / MiB:.1f}")
    assert memory_problems(rss, device_mem) == []
    # The same samples plus what keeping one 1 MiB buffer per epoch adds: the bound must fire.
    leaked = rss + np.arange(len(rss)) * MiB
    problems = memory_problems(leaked, device_mem)
    slopes = [int(m.group(1)) for m in map(re.compile(r"RSS grows (\d+) KiB per epoch").match, problems) if m]
    assert len(slopes) == 1 and 900 < slopes[0] < 1150, problems
