"""`python -m bench.step --model NAME --batch-size N --image-size S`: training-step throughput.

Prints ONE JSON line: images/s of the real `Trainer` step (fused AdamW, device lr table,
device accumulators) for eager, compiled, eager + CUDA graph, compiled + CUDA graph and
`torch.compile(mode="reduce-overhead")` (inductor's own CUDA graphs), each in fp32 and AMP,
from one process, with the device and versions. Graph variants need CUDA and read
"skipped: no GPU" elsewhere. The batch is a fixed random channels-last tensor already on
the device, so the figure is the step alone (bench/loaders.py measures the input side).
`cudagraph_skips` counts the times inductor silently ran reduce-overhead code without graphs.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import sys
import time
from dataclasses import dataclass

import torch

from bench.record import print_line
from common.cli import run_main, suggest
from common.options import like, opt, parse as parse_options, usage
from common.device import sync
from engine.options.config import Config, ConfigError, TrainConfig
from engine.run.env import device_name, prepare_cpu, versions
from engine.run.graphs import cudagraph_skips
from engine.run.build import trainer_alone
from engine.run.loop import Trainer
from models.registry import MODELS

VARIANTS = ("eager", "compiled", "cuda_graph", "compiled_cuda_graph", "reduce_overhead")
NEEDS_CUDA = {"cuda_graph", "compiled_cuda_graph", "reduce_overhead"}


def _trainer(args, device: torch.device, variant: str, amp: bool) -> Trainer:
    cfg = Config()
    cfg.model.name, cfg.data.batch_size, cfg.data.image_size = args.model, args.batch_size, args.image_size
    cfg.train.amp, cfg.train.amp_dtype = amp, args.amp_dtype
    cfg.train.compile = variant in ("compiled", "compiled_cuda_graph")
    cfg.train.cuda_graph = variant in ("cuda_graph", "compiled_cuda_graph")
    cfg.train.epochs = 1
    cfg.model.dropout = 0.0  # the architecture's own default, as measured before
    torch.manual_seed(0)
    trainer = trainer_alone(cfg, args.classes, args.image_size, device, steps_per_epoch=args.warmup + args.steps)
    if variant == "reduce_overhead":
        trainer.forward = torch.compile(trainer.model, mode="reduce-overhead", dynamic=False)
    return trainer


def measure_step(args, device: torch.device, variant: str, amp: bool) -> dict:
    torch._dynamo.reset()
    skips_before = cudagraph_skips()
    trainer = _trainer(args, device, variant, amp)
    g = torch.Generator(device=device).manual_seed(1)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device, generator=g)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, args.classes, (args.batch_size,), device=device, generator=g)

    def step():
        if variant == "reduce_overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new training iteration for cudagraph trees
        trainer.train_step(images, labels)

    t0 = time.perf_counter()
    for _ in range(args.warmup):  # compile, autotune, capture
        step()
    sync(device)
    warm_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = time.perf_counter() - t0
    out = {"images_per_second": round(args.steps * args.batch_size / seconds, 1),
           "warmup_seconds": round(warm_seconds, 2)}
    if variant == "reduce_overhead":
        out["cudagraph_skips"] = cudagraph_skips() - skips_before
    if trainer.graph is not None:
        out["captured"] = trainer.graph.captured
    return out


def speedup_ratios(results: dict) -> dict:
    """Speed-ups against eager at the same precision: what the acceptance figures are."""
    out = {}
    for precision, row in results.items():
        base = row.get("eager", {}).get("images_per_second")
        for variant, value in row.items():
            if variant != "eager" and isinstance(value, dict) and base:
                out[f"{precision}.{variant}_vs_eager"] = round(value["images_per_second"] / base, 3)
    return out


def notes(results: dict, speedups: dict, device: torch.device) -> list[str]:
    said = []
    for key, ratio in speedups.items():
        if "compiled_vs_eager" in key and ratio < 1:
            said.append(f"{key} = {ratio}: torch.compile is slower than eager for this step on {device.type}")
    for precision, row in results.items():
        skips = row.get("reduce_overhead", {})
        if isinstance(skips, dict) and skips.get("cudagraph_skips"):
            said.append(f"{precision}: reduce-overhead silently ran without CUDA graphs "
                        f"({skips['cudagraph_skips']} skips); the manual whole-step graph does not depend on it")
    return said


@dataclass
class Options:
    model: str = opt("seedcnn", help="the model measured (models/registry.py)")
    batch_size: int = opt(128, help="images per step")
    image_size: int = opt(28, help="image side in pixels")
    classes: int = opt(7, help="number of classes of the synthetic batch")
    steps: int = opt(20, help="timed steps per variant")
    warmup: int = opt(5, ge=0, help="untimed steps first (compile, capture)")
    amp_dtype: str = opt("bf16", choices=("bf16", "fp16"), help="autocast dtype of the amp precision")
    device: str = like(TrainConfig, "device", help="where the step runs")
    variants: str = opt(",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    precisions: str = opt("fp32,amp", help="comma-separated subset of fp32,amp")


def parse_step_options(argv: list[str]) -> Options:
    args = parse_options(argv, Options, "bench.step", suggest)[0]
    if args.model not in MODELS:
        raise ConfigError(f"--model {args.model}: unknown; known: {', '.join(MODELS)}")
    for name in args.variants.split(","):
        if name not in VARIANTS:
            raise ConfigError(f"--variants: unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    for name in args.precisions.split(","):
        if name not in ("fp32", "amp"):
            raise ConfigError(f"--precisions: unknown {name!r}; known: fp32, amp")
    if min(args.batch_size, args.image_size, args.steps, args.classes) < 1:
        raise ConfigError("--batch-size, --image-size, --steps and --classes must be >= 1")
    if args.warmup < 4:  # the graph step runs 3 eager warm-up steps, then captures on the 4th
        raise ConfigError(f"--warmup must be >= 4 so CUDA-graph variants are captured before timing; got {args.warmup}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible here")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("bench.step", __doc__.splitlines()[0], Options))


def _main(argv: list[str]) -> int:
    args = parse_step_options(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          args.device if args.device != "auto" else "cpu")
    if device.type == "cpu":
        prepare_cpu()  # allocator and thread layout, as a training run on the CPU (engine.run.env.pick_device)
    results = {}
    for precision in args.precisions.split(","):
        key = "fp32" if precision == "fp32" else f"amp_{args.amp_dtype}"
        results[key] = {}
        for variant in args.variants.split(","):
            if variant in NEEDS_CUDA and device.type != "cuda":
                results[key][variant] = "skipped: no GPU"
                continue
            try:
                results[key][variant] = measure_step(args, device, variant, precision == "amp")
            except Exception as exc:  # one failing variant is reported, the others still run
                results[key][variant] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    speedups = speedup_ratios(results)
    line = {"bench": "step", "model": args.model, "batch_size": args.batch_size, "image_size": args.image_size,
            "channels_last": True, "optimizer": "adamw fused", "steps": args.steps, "warmup": args.warmup,
            "images_per_second": results, "ratios": speedups, "notes": notes(results, speedups, device),
            "device": device_name(device), "versions": versions()}
    print_line(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
