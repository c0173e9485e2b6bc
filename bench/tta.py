"""Time to accuracy: training seconds until the test accuracy first reaches a target.

`python -m bench.tta --data PATH [--target 0.75] [--max-seconds S] [--warmup-steps W]
[train options]` prints one JSON line. Wall seconds and, beside them, CPU seconds of the
training (on a shared CPU the latter is what an idle machine would need at most). The test split is evaluated after every epoch
(evaluation time is not counted; the stopping rule reads test accuracy as airbench and
MLPerf's time-to-quality do). Warm-up steps (compile, cuDNN autotune) run first and are
undone by restoring the initial state, so the clock measures training, not compilation;
their cost is reported as `warmup_seconds`. The learning-rate schedule spans `--epochs`,
so a run that reaches the target early still followed its full schedule's shape so far.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import copy
import logging
import sys
from dataclasses import dataclass
import time

import torch

from common.options import opt
from bench.record import cpu_seconds, environment, print_line, sync, train_options_cli
from engine.options.config import Config, ConfigError
from engine.run.build import build
from engine.run.loop import Trainer

log = logging.getLogger("medtrain.bench")


def _warmup(trainer: Trainer, loader, steps: int, device: torch.device) -> float:
    if steps <= 0:
        return 0.0
    initial = copy.deepcopy(trainer.state_dict())
    rng = torch.get_rng_state()
    t0 = time.perf_counter()
    for step, (images, labels) in enumerate(loader):
        trainer.train_step(images, labels)
        if step + 1 >= steps:
            break
    sync(device)
    seconds = time.perf_counter() - t0
    trainer.load_state_dict(initial)  # back to the untouched model: only the caches stay warm
    torch.set_rng_state(rng)
    return seconds


def time_to_accuracy(cfg: Config, target: float = 0.75, max_seconds: float = 0.0, warmup_steps: int = 0) -> dict:
    if warmup_steps and cfg.train.cuda_graph:
        # Restoring the optimizer state swaps the tensors a captured graph points at.
        raise ConfigError("--warmup-steps cannot be undone under --cuda-graph; use --warmup-steps 0 there")
    run = build(cfg, splits=("train", "test"))
    cfg, ds, device, trainer = run.cfg, run.dataset, run.device, run.trainer
    name, why, train_loader, test_loader = run.loader_name, run.loader_reason, run.loaders["train"], run.loaders["test"]
    warmup_seconds = _warmup(trainer, train_loader, warmup_steps, device)

    curve, train_seconds, train_cpu, reached = [], 0.0, 0.0, None
    for epoch in range(cfg.train.epochs):
        train_loader.set_epoch(epoch)
        sync(device)
        t0, c0 = time.perf_counter(), cpu_seconds()
        for images, labels in train_loader:
            trainer.train_step(images, labels)
        sync(device)
        train_seconds += time.perf_counter() - t0
        train_cpu += cpu_seconds() - c0  # what an idle machine would need at most, on the CPU
        cm, _, _ = trainer.evaluate(test_loader)
        accuracy = float(cm.diagonal().sum() / cm.sum().clamp(min=1))  # sync point: epoch end
        curve.append({"epoch": epoch + 1, "train_seconds": train_seconds, "train_cpu_seconds": train_cpu,
                      "test_accuracy": accuracy})
        log.info("epoch %d: %.1f s of training so far, test accuracy %.4f", epoch + 1, train_seconds, accuracy)
        if accuracy >= target and reached is None:
            reached = curve[-1]
            break
        if max_seconds and train_seconds >= max_seconds:
            break
    best = max(c["test_accuracy"] for c in curve)
    return {
        "benchmark": "time_to_accuracy", **environment(device),
        "config": {"data": cfg.data.path, "dataset": ds.name, "model": cfg.model.name, "image_size": cfg.data.image_size,
                   "batch_size": cfg.data.batch_size, "epochs": cfg.train.epochs, "lr": cfg.optim.lr,
                   "schedule": cfg.schedule.name, "amp": cfg.train.amp, "compile": cfg.train.compile,
                   "cuda_graph": cfg.train.cuda_graph, "loader": name, "loader_reason": why, "preset": cfg.run.preset,
                   "warmup_steps": warmup_steps, "max_seconds": max_seconds, "seed": cfg.train.seed},
        "target_test_accuracy": target,
        "reached": reached is not None,
        "seconds_to_target": reached["train_seconds"] if reached else None,
        "cpu_seconds_to_target": reached["train_cpu_seconds"] if reached else None,
        "epochs_to_target": reached["epoch"] if reached else None,
        "best_test_accuracy": best,
        "warmup_seconds": warmup_seconds,
        "curve": curve,
    }


@dataclass
class Options:
    target: float = opt(0.75, help="test accuracy to reach")
    max_seconds: float = opt(0.0, help="stop after this many training seconds; 0 = the whole schedule")
    warmup_steps: int = opt(0, help="untimed steps first, undone before the clock starts")


def main(argv: list[str] | None = None) -> int:
    code, result = train_options_cli(
        argv, __doc__, Options, "bench.tta",
        lambda own, cfg: time_to_accuracy(cfg, own["target"], own["max_seconds"], own["warmup_steps"]))
    if result is not None:
        print_line(result)
    return code


if __name__ == "__main__":
    sys.exit(main())
