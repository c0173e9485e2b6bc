"""Time to 0.75 test accuracy on DermaMNIST-28 (training seconds; evaluation not counted)."""
from __future__ import annotations

import pytest

from bench import tta
from bench.record import attach
from engine.options.config import parse_args

TARGET = 0.75


def run_tta(benchmark, argv: list[str], max_seconds: float, warmup_steps: int) -> dict:
    cfg = parse_args(argv + ["--train.progress", "off"]).config
    holder = {}
    benchmark.pedantic(lambda: holder.update(tta.time_to_accuracy(cfg, TARGET, max_seconds, warmup_steps)),
                       rounds=1, iterations=1)
    return attach(benchmark, holder)


@pytest.mark.slow
def test_tta_dermamnist_cpu(benchmark, dermamnist_npz):
    """CPU figure: the dermamnist preset (seed CNN, 48 one-cycle epochs); capped at 20 minutes."""
    result = run_tta(benchmark, ["--preset", "dermamnist", "--data", str(dermamnist_npz), "--device", "cpu"],
                     max_seconds=1200, warmup_steps=0)
    assert result["curve"], "no epoch finished"


@pytest.mark.gpu
def test_tta_dermamnist_gpu(benchmark, dermamnist_npz):
    """Acceptance 3: the dermamnist preset (the CPU recipe, seed CNN) with AMP; target under 10 s."""
    result = run_tta(benchmark, ["--preset", "dermamnist", "--data", str(dermamnist_npz), "--amp", "--device", "cuda"],
                     max_seconds=12, warmup_steps=3)  # the GPU check's tta step has 45 s (bench/gpu_plan.py)
    assert result["reached"], f"best test accuracy {result['best_test_accuracy']:.3f} < {TARGET}"
