"""Loader throughput, no model: how many training images per second a backend delivers.

    python -m bench.loaders --data PATH --loader NAME --batch-size N --seconds S [--image-size N]

Builds the training loader exactly as a run would (our sampler, the run's augmentation:
random-resized-crop + horizontal flip, no vertical flip/rot90/jitter so that every backend,
the baseline included, does the same work), pulls one warm-up batch (pays JIT compilation,
worker start, pipeline build), then counts batches for S seconds, cycling epochs, and prints
ONE JSON line: images_per_second, device, loader, config, versions. Batches are consumed as
a training step would: the device is synchronized once at the end, not per batch.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import torch

from common.cli import run_main
from engine.build import build
from engine.config import ConfigError, parse_args
from engine.env import device_name, versions
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


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loaders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--loader", required=True, help=f"one of {', '.join(base.REGISTRY)} or auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--image-size", type=int, default=0, help="0 = the dataset's native size")
    parser.add_argument("--workers", type=int, default=0, help="decode threads/processes; 0 = all cores")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.batch_size < 1 or args.seconds <= 0:
        raise ConfigError("--batch-size and --seconds must be positive")
    cfg = parse_args(["--data", args.data, "--loader", args.loader, "--batch-size", str(args.batch_size),
                      "--workers", str(args.workers), "--image-size", str(args.image_size), "--device", args.device,
                      "--data.vflip", "false", "--data.rot90", "false"])  # random-resized-crop + horizontal flip only
    run = build(cfg, splits=("train",), model=False, out_dtype=getattr(torch, args.dtype))
    ds, device, name, why, loader = run.dataset, run.device, run.loader_name, run.loader_reason, run.loaders["train"]
    images, seconds = measure(loader, args.seconds, device)
    result = {
        "images_per_second": round(images / seconds, 1), "images": images, "seconds": round(seconds, 2),
        "device": device_name(device), "loader": name, "loader_reason": why,
        "config": {"data": args.data, "batch_size": args.batch_size, "image_size": loader.image_size,
                   "workers": args.workers, "dtype": args.dtype, "augment": "random-resized-crop+hflip",
                   "crop_scale_min": cfg.data.crop_scale_min, "train_images": len(ds.train)},
        "versions": versions(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
