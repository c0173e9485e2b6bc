"""End to end: one training epoch of the engine against the same epoch through `baseline`.

`python -m bench.e2e --data PATH [--rounds R] [--warmup-steps W] [--contend N] [train options]`
prints one JSON line (with the process's peak memory). Same dataset split, model architecture, resolution, batch size and machine, in
the same process, epochs alternating (engine, baseline, baseline, engine, ...):

- engine: the loader `--loader` picks (auto: tensor/nvjpeg/dali), the engine's Trainer step
  (device accumulators, fused optimizer, channels_last, plus whatever --amp/--compile/
  --cuda-graph ask for);
- baseline: the `baseline` loader (PIL Dataset + torchvision transforms + DataLoader) and the
  loop users write today: contiguous model and NCHW-contiguous batches, Adam, fp32, eager,
  `loss.item()` every step; for the seed CNN, its layers as the notebooks write them
  (conv-BN-ReLU-MaxPool2d, models/seedcnn.py: build_notebook), not the engine's fused blocks.

Reported: images/s of each (median over rounds) and their ratio; one-off setup seconds
(the engine's decode into memory, compile warm-up) with a ratio that charges setup to a
single epoch, so a one-epoch run is not flattered; and images per CPU-second (this process
plus its DataLoader workers), which stays put when other jobs load the machine and wall
time does not: on a shared 2-core box it is the steadier of the two. `--contend N` keeps N
busy processes running through both pipelines (bench/contend.py): a shared machine, reproduced.

Documented runs (bench/results/):

    # seed-style: HAM10000 at 128 px, the seed CNN, batch 128, engine vs the baseline pipeline
    python -m bench.e2e --data ../shared/data/ham10000_224 --image-size 128 --model seedcnn \
        --batch-size 128 --rounds 2 [--amp] [--contend 1]
    # the mlp at 224 px
    python -m bench.e2e --data ../shared/data/ham10000_224 --model mlp --rounds 2
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
from torch import nn

from bench.contend import busy
from common.options import opt
from bench.record import environment, interleaved, print_line, sync, train_options_cli
from engine.run.build import build, build_model_for
from engine.options.config import Config, ConfigError
from engine.options.resolve import loader_spec, sampler_spec
from loaders import base as loaders
from loaders.datasets import Dataset
from models import seedcnn

log = logging.getLogger("medtrain.bench")
CONTEND_LIMIT_SECONDS = 3 * 3600  # busy processes end by themselves after this, whatever happens here


class EnginePipeline:
    def __init__(self, cfg: Config, dataset: Dataset | None, warmup_steps: int):
        t0 = time.perf_counter()
        run = build(cfg, dataset, splits=("train",))
        self.run, self.name, self.why = run, run.loader_name, run.loader_reason
        self.loader, self.trainer = run.loaders["train"], run.trainer
        self.device, self.epoch_index = run.device, 0
        self._warmup(warmup_steps)  # compile and autotune belong to setup, not to the epoch
        sync(self.device)
        self.setup_seconds = time.perf_counter() - t0

    def _warmup(self, steps: int) -> None:
        if steps <= 0:
            return
        for step, (images, labels) in enumerate(self.loader):
            self.trainer.train_step(images, labels)
            if step + 1 >= steps:
                break

    def epoch(self) -> int:
        self.loader.set_epoch(self.epoch_index)
        self.epoch_index += 1
        self.trainer.reset_accumulators()
        for images, labels in self.loader:
            self.trainer.train_step(images, labels)
        return self.trainer.read_accumulators()["seen"]  # sync point: epoch end


class BaselinePipeline:
    """What users write today, on the same data and model: the yardstick."""

    def __init__(self, ds: Dataset, cfg: Config, device: torch.device, warmup_steps: int):
        t0 = time.perf_counter()
        cfg = copy.deepcopy(cfg)
        cfg.data.loader, cfg.train.amp, cfg.train.compile, cfg.train.cuda_graph = "baseline", False, False, False
        if not loaders.available("baseline"):
            raise ConfigError("the baseline loader (loaders/baseline.py) is not available in this checkout")
        self.loader = loaders.build_loader("baseline", ds, "train", loader_spec(cfg, ds.native_size), device, train=True,
                                    sampler=loaders.make_sampler(ds, sampler_spec(cfg), device))
        if cfg.model.name == "seedcnn":  # the network as the notebooks write it: nn layers, no fused block
            model = seedcnn.build_notebook(ds.num_classes, cfg.data.image_size, dropout=cfg.model.dropout)
        else:
            model = build_model_for(cfg, ds.num_classes, cfg.data.image_size)
        self.model = model.to(device, memory_format=torch.contiguous_format)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr)
        self.criterion = nn.CrossEntropyLoss()
        self.device, self.epoch_index = device, 0
        self._run(warmup_steps)
        sync(device)
        self.setup_seconds = time.perf_counter() - t0

    def _run(self, max_steps: int | None) -> int:
        if max_steps is not None and max_steps <= 0:
            return 0
        self.model.train()
        seen, running = 0, 0.0
        for step, (images, labels) in enumerate(self.loader):
            # A user's DataLoader hands the model NCHW-contiguous batches; the loader contract's
            # channels_last is the engine's choice, and a channels_last input would make even
            # this contiguous model's convolutions run channels_last.
            images = images.contiguous()
            self.optimizer.zero_grad()
            loss = self.criterion(self.model(images), labels)
            loss.backward()
            self.optimizer.step()
            running += loss.item()  # the per-step host sync users write to log a running loss
            seen += len(labels)
            if max_steps is not None and step + 1 >= max_steps:
                break
        return seen

    def epoch(self) -> int:
        self.loader.set_epoch(self.epoch_index)
        self.epoch_index += 1
        return self._run(None)


def prepare_pipelines(cfg: Config, warmup_steps: int = 2) -> tuple[Dataset, EnginePipeline, BaselinePipeline, torch.device]:
    """Both pipelines on one dataset split, warmed up and ready to time. The dataset is read
    first, so neither pipeline's setup time includes scanning it."""
    ds = build(cfg, splits=(), model=False).dataset
    engine = EnginePipeline(cfg, ds, warmup_steps)
    resolved = engine.run.cfg
    return ds, engine, BaselinePipeline(ds, resolved, engine.device, warmup_steps), engine.device


def augment_name(cfg: Config) -> str:
    d = cfg.data
    parts = [f"crop{d.crop_scale_min:g}-1"] + [n for n, on in (("hflip", d.hflip), ("vflip", d.vflip), ("rot90", d.rot90),
                                                              (f"jitter{d.color_jitter:g}", d.color_jitter > 0)) if on]
    return "+".join(parts)


def summarize_timings(cfg: Config, ds: Dataset, engine: EnginePipeline, baseline: BaselinePipeline,
              timed: dict[str, dict], warmup_steps: int) -> dict:
    cfg = engine.run.cfg  # resolved: the image size actually trained
    e, b = timed["engine"]["images_per_second"], timed["baseline"]["images_per_second"]
    n = len(ds.train)
    # A one-epoch run pays the one-off setup too (the engine's decode into memory, compile).
    one_epoch = {k: n / (n / timed[k]["images_per_second"] + p.setup_seconds)
                 for k, p in (("engine", engine), ("baseline", baseline))}
    return {
        "benchmark": "e2e_epoch", **environment(engine.device),
        "config": {"data": cfg.data.path, "dataset": ds.name, "train_images": n, "model": cfg.model.name,
                   "image_size": cfg.data.image_size, "batch_size": cfg.data.batch_size,
                   "rounds": len(timed["engine"]["rounds"]), "warmup_steps": warmup_steps,
                   "engine_loader": engine.name, "engine_loader_reason": engine.why, "amp": cfg.train.amp,
                   "amp_dtype": cfg.train.amp_dtype, "compile": cfg.train.compile, "cuda_graph": cfg.train.cuda_graph,
                   "workers": cfg.data.workers, "augment": augment_name(cfg),
                   "baseline": "baseline loader, contiguous model and batches (seedcnn: the notebook's conv-BN-ReLU-MaxPool2d), "
                                "Adam, fp32 eager, loss.item() per step"},
        "images_per_second": {"engine": e, "baseline": b},
        "images_per_cpu_second": {k: timed[k]["images_per_cpu_second"] for k in ("engine", "baseline")},
        "rounds_images_per_second": {k: v["rounds"] for k, v in timed.items()},
        "setup_seconds": {"engine": engine.setup_seconds, "baseline": baseline.setup_seconds},
        "ratios": {"engine_vs_baseline": e / b,
                   "engine_vs_baseline_per_cpu_second":
                       timed["engine"]["images_per_cpu_second"] / timed["baseline"]["images_per_cpu_second"],
                   "engine_vs_baseline_one_epoch_with_setup": one_epoch["engine"] / one_epoch["baseline"]},
    }


def time_pipelines(cfg: Config, rounds: int = 1, warmup_steps: int = 2, contend: int = 0) -> dict:
    """Time `rounds` epochs of each pipeline, alternating, and summarize; with `contend` busy
    processes running through both pipelines' setup and epochs (bench/contend.py)."""
    if contend < 0:
        raise ConfigError(f"--contend takes a number of busy processes, 0 or more; got {contend}")
    with busy(contend, seconds=CONTEND_LIMIT_SECONDS):
        ds, engine, baseline, device = prepare_pipelines(cfg, warmup_steps)
        timed = interleaved({"engine": engine.epoch, "baseline": baseline.epoch}, rounds, device)
    result = summarize_timings(cfg, ds, engine, baseline, timed, warmup_steps)
    result["config"]["contend"] = contend
    return result


@dataclass
class Options:
    rounds: int = opt(1, help="timed epochs of each side (engine, baseline), interleaved")
    warmup_steps: int = opt(2, help="untimed steps of each side first (compile, autotune)")
    contend: int = opt(0, help="keep N other processes busy while measuring (a shared machine, reproduced)")


def main(argv: list[str] | None = None) -> int:
    code, result = train_options_cli(argv, __doc__, Options, "bench.e2e",
                                     lambda own, cfg: time_pipelines(cfg, own["rounds"], own["warmup_steps"], own["contend"]))
    if result is not None:
        print_line(result)
    return code


if __name__ == "__main__":
    sys.exit(main())
