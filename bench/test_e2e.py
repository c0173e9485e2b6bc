"""End-to-end epoch: the engine against the `baseline` pipeline, same data/model/machine/run."""
from __future__ import annotations

import pytest

from bench import e2e
from bench.record import RoundTimer, attach
from engine.options.config import parse_args
from loaders import base


def run_e2e(benchmark, argv: list[str], rounds: int, warmup_steps: int = 2) -> dict:
    cfg = parse_args(argv + ["--train.progress", "off"]).config
    ds, engine, baseline, device = e2e.prepare_pipelines(cfg, warmup_steps)
    timer = RoundTimer({"engine": engine.epoch, "baseline": baseline.epoch}, device)
    # pytest-benchmark's stats time one round (an engine epoch plus a baseline epoch);
    # the guarded figures are the per-pipeline medians and their ratio in extra_info.
    benchmark.pedantic(timer.round, rounds=rounds, iterations=1)
    return attach(benchmark, e2e.summarize_timings(cfg, ds, engine, baseline, timer.results(), warmup_steps))


@pytest.mark.ci
def test_e2e_synthetic_cpu(benchmark):
    """CI: a pipeline-bound pair (pixel MLP) on the embedded synthetic JPEGs, 3 alternating rounds."""
    result = run_e2e(benchmark, ["--data", "synthetic", "--data.synthetic_count", "600", "--model", "mlp",
                                 "--batch-size", "64", "--device", "cpu", "--workers", "2"], rounds=3)
    # On a 400-image epoch the one-off setup swamps the epoch and swings with machine load:
    # recorded, but not a guarded ratio in CI.
    benchmark.extra_info["informational"] = {
        "engine_vs_baseline_one_epoch_with_setup": result["ratios"].pop("engine_vs_baseline_one_epoch_with_setup")}
    assert result["images_per_second"]["engine"] > 0 and result["images_per_second"]["baseline"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("model, loader", [("mlp", "auto"), ("mlp", "dali"), ("seedcnn", "auto")])
def test_e2e_ham224_cpu(benchmark, ham_dir, model, loader):
    """Acceptance 1 on the CPU: HAM10000 at 224 px, one epoch each; mlp is pipeline-bound, seedcnn model-bound."""
    if loader != "auto" and not base.available(loader):
        pytest.skip(f"--loader {loader} is not installed here")
    argv = ["--data", str(ham_dir), "--image-size", "224", "--model", model, "--batch-size", "64", "--device", "cpu",
            "--loader", loader, "--data.max_samples", "1500"]
    result = run_e2e(benchmark, argv, rounds=1)
    assert result["config"]["image_size"] == 224


@pytest.mark.gpu
def test_e2e_ham224_gpu(benchmark, jpeg_data):
    """Acceptance 3: ResNet-50 AMP channels-last, engine loader (nvjpeg/tensor) vs baseline, 2 rounds."""
    result = run_e2e(benchmark, ["--data", jpeg_data, "--image-size", "224", "--model", "resnet50", "--amp",
                                 "--batch-size", "256", "--device", "cuda"], rounds=2, warmup_steps=5)
    assert result["ratios"]["engine_vs_baseline"] > 1
