"""Loader throughput, no model: how many training images per second a backend delivers.

    python -m bench.loaders --data PATH --loader NAME --batch-size N --seconds S [--image-size N] [--contend N]

Builds the training loader exactly as a run would (our sampler, the run's augmentation:
random-resized-crop + horizontal flip, no vertical flip/rot90/jitter so that every backend,
the baseline included, does the same work), pulls one warm-up batch (pays JIT compilation,
worker start, pipeline build), then counts batches for S seconds, cycling epochs, and prints
ONE JSON line: images_per_second, device, loader, config, versions, peak memory. `--contend N`
keeps N busy processes running while it counts (bench/contend.py): the shared-machine figure.
Batches are consumed as a training step would: the device is synchronized once at the end.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import logging
import sys
from dataclasses import dataclass
import time

import torch

from bench.contend import busy
from bench.record import print_line
from common.cli import run_main, suggest
from common.options import like, opt, parse, usage
from engine.run.build import build
from engine.options.config import ConfigError, TrainConfig, parse_args
from loaders.spec import DataSpec
from engine.run.env import device_name, versions
from loaders import base


def measure(loader, seconds: float, device: torch.device) -> tuple[int, float]:
    """(images, seconds) over whole batches after one warm-up batch."""
    epoch = 0
    loader.set_epoch(epoch)
    batches = iter(loader)
    next(batches)  # warm-up: compilation, worker start-up, first file reads
    images, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch = next(batches, None)
        if batch is None:  # epoch over: the next one, as a run would
            epoch += 1
            loader.set_epoch(epoch)
            batches = iter(loader)
            continue
        images += batch[0].shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # sync point: once, so queued device work is counted
    return images, time.perf_counter() - t0


@dataclass
class Options:
    data: str = opt("", required=True, help="the dataset (as --data of engine.train)")
    loader: str = opt("", required=True, help=f"one of {', '.join(base.REGISTRY)} or auto")
    batch_size: int = opt(64, help="images per batch")
    seconds: float = opt(10.0, help="how long the loader is timed")
    image_size: int = opt(0, help="output side in pixels; 0 = the dataset's native size")
    workers: int = like(DataSpec, "workers", help="decode threads/processes; 0 = all cores")
    device: str = like(TrainConfig, "device", help="where the batches are delivered")
    dtype: str = opt("float32", choices=("float32", "bfloat16", "float16"), help="dtype of the delivered images")
    contend: int = opt(0, help="keep N other processes busy while measuring (a shared machine, reproduced)")


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("bench.loaders", __doc__.split("\n\n")[0], Options))


def _main(argv: list[str]) -> int:
    args = parse(argv, Options, "bench.loaders", suggest)[0]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.batch_size < 1 or args.seconds <= 0 or args.contend < 0:
        raise ConfigError("--batch-size and --seconds must be positive, --contend N at least 0")
    cfg = parse_args(["--data", args.data, "--loader", args.loader, "--batch-size", str(args.batch_size),
                      "--workers", str(args.workers), "--image-size", str(args.image_size), "--device", args.device,
                      "--data.vflip", "false", "--data.rot90", "false"]).config  # random-resized-crop + horizontal flip only
    # build() lays out the CPU as a training run does (allocator, threads: engine.run.env.pick_device)
    run = build(cfg, splits=("train",), model=False, out_dtype=getattr(torch, args.dtype))
    ds, device, name, why, loader = run.dataset, run.device, run.loader_name, run.loader_reason, run.loaders["train"]
    with busy(args.contend, seconds=args.seconds + 600):
        images, seconds = measure(loader, args.seconds, device)
    result = {
        "images_per_second": round(images / seconds, 1), "images": images, "seconds": round(seconds, 2),
        "device": device_name(device), "loader": name, "loader_reason": why,
        "config": {"data": args.data, "batch_size": args.batch_size, "image_size": loader.image_size,
                   "workers": args.workers, "dtype": args.dtype, "contend": args.contend, "augment": "random-resized-crop+hflip",
                   "crop_scale_min": cfg.data.crop_scale_min, "train_images": len(ds.train)},
        "versions": versions(),
    }
    print_line(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
