"""What the data layer needs to know, and nothing more: small frozen specs the engine fills
from its resolved config (engine/resolve.py). Loaders never see the engine's `Config`."""
from __future__ import annotations

import os
from dataclasses import dataclass


def default_workers(requested: int) -> int:
    """Decode threads: the requested count, or one per core when 0 (the option's default)."""
    return requested or os.cpu_count() or 2


def per_rank_batch(global_batch: int, world_size: int, train: bool) -> int:
    """The configured batches are global; under DDP each rank holds its share. Training batches
    divide exactly (checked at set-up); evaluation rounds up so every row is scored."""
    return global_batch // world_size if train else -(-global_batch // world_size)


@dataclass(frozen=True)
class DataSpec:
    """How to read and split a dataset (`loaders.datasets.load_dataset`)."""
    path: str = "synthetic"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    verify: str = "header"
    workers: int = 0
    max_samples: int = 0
    synthetic_count: int = 3000
    cache_dir: str = ""


@dataclass(frozen=True)
class SamplerSpec:
    """Which training rows each epoch draws (`loaders.base.make_sampler`); `batch_size` is global."""
    batch_size: int = 64
    kind: str = "uniform"
    alpha: float = 1.0
    replacement: bool = True
    seed: int = 0


@dataclass(frozen=True)
class LoaderSpec:
    """How a backend decodes, augments and batches (`loaders.base.build`). Batches are global."""
    batch_size: int = 64
    eval_batch_size: int = 64
    image_size: int = 0           # 0 = the dataset's native size
    crop_scale_min: float = 0.35
    crop_ratio: float = 4 / 3
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    color_jitter: float = 0.0
    eval_crop: float = 1.0
    clahe: bool = False
    workers: int = 0              # 0 = one per core
    seed: int = 0
    cache_dir: str = ""           # where derived files (an FFCV .beton) are kept
