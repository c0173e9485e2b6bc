"""Training-step images/s per model: eager, compiled, CUDA graph, compiled + CUDA graph; fp32 and AMP.

bench/step.py measures (the real Trainer step on a fixed channels-last batch); this suite runs
the variants that matter per device, records them with device/versions/config, and keeps
the speed-ups against eager at the same precision as the guarded ratios.
"""
from __future__ import annotations

import pytest
import torch

from bench import step
from bench.record import attach, environment


def _run_step(benchmark, argv: list[str]) -> dict:
    args = step.parse_step_options(argv)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    results: dict[str, dict] = {}

    def run():
        for precision in args.precisions.split(","):
            row = results.setdefault("fp32" if precision == "fp32" else f"amp_{args.amp_dtype}", {})
            for variant in args.variants.split(","):
                if variant in step.NEEDS_CUDA and device.type != "cuda":
                    row[variant] = "skipped: no GPU"
                    continue
                row[variant] = step.measure_step(args, device, variant, precision == "amp")

    benchmark.pedantic(run, rounds=1, iterations=1)
    speedups = step.speedup_ratios(results)
    return attach(benchmark, {
        "benchmark": "step", **environment(device),
        "config": {"model": args.model, "batch_size": args.batch_size, "image_size": args.image_size,
                   "steps": args.steps, "warmup": args.warmup, "variants": args.variants, "precisions": args.precisions,
                   "channels_last": True, "optimizer": "adamw fused"},
        "images_per_second": results, "ratios": speedups, "notes": step.notes(results, speedups, device)})


@pytest.mark.slow
def test_step_seedcnn28_cpu(benchmark):
    """CPU: eager vs compiled (a cold compile takes tens of seconds on the CPU), fp32 and AMP."""
    _run_step(benchmark, ["--model", "seedcnn", "--batch-size", "128", "--image-size", "28", "--device", "cpu",
                         "--variants", "eager,compiled", "--steps", "20"])


@pytest.mark.gpu
def test_step_seedcnn28_gpu(benchmark):
    result = _run_step(benchmark, ["--model", "seedcnn", "--batch-size", "512", "--image-size", "28", "--device", "cuda",
                                  "--precisions", "amp", "--variants", "eager,cuda_graph,compiled_cuda_graph",
                                  "--steps", "50"])  # one cold compile per model: the check's budget
    assert result["images_per_second"]["amp_bf16"]["compiled_cuda_graph"]["captured"]


@pytest.mark.gpu
def test_step_resnet50_224_amp_gpu(benchmark):
    """ResNet-50 AMP channels-last: compare with ~2,800 img/s (PyTorch) and ~7,000 (MLPerf best) per H100."""
    result = _run_step(benchmark, ["--model", "resnet50", "--batch-size", "256", "--image-size", "224", "--device", "cuda",
                                  "--precisions", "amp", "--variants", "eager,cuda_graph", "--steps", "30"])
    benchmark.extra_info["public_reference_images_per_second"] = {"pytorch_h100": 2800, "mlperf_best_h100": 7000}
    assert result["images_per_second"]["amp_bf16"]["eager"]["images_per_second"] > 0


@pytest.mark.gpu
def test_step_resnet50_224_amp_compiled_gpu(benchmark):
    """ResNet-50's cold inductor compile alone is estimated at 60-90 s: its own GPU-check step
    (`--steps step_compiled`), outside the speed call's budget."""
    result = _run_step(benchmark, ["--model", "resnet50", "--batch-size", "256", "--image-size", "224", "--device", "cuda",
                                  "--precisions", "amp", "--variants", "compiled_cuda_graph", "--steps", "30"])
    assert result["images_per_second"]["amp_bf16"]["compiled_cuda_graph"]["captured"]
