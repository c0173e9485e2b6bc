"""The one loader interface, the registry, and `--loader auto`.

Every backend yields `(images, labels)` already on the training device: images normalized
float in channels_last (augmentation ran on the device) and labels int64, with a fixed batch
shape. Training drops the incomplete tail (the sampler deals whole batches); evaluation pads
the last batch and marks padded rows with label -1, which the loss and metrics ignore, so
neither compiled graphs nor CUDA graphs ever see a new shape.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np
import torch

from common.constants import PAD_LABEL
from common.errors import ConfigError
from kernels.augment import AugmentSpec, DeviceAugment
from kernels.sampler import EpochSampler
from loaders.datasets import Dataset, Split
from loaders.multilabel import rarest_finding_weights, stratify_key
from loaders.spec import LoaderSpec, SamplerSpec, default_workers, per_rank_batch

log = logging.getLogger("medtrain.loaders")

# name -> "module:Class"; a new backend is one file plus one line here.
REGISTRY = {
    "plain": "loaders.plain:PlainLoader",
    "tensor": "loaders.tensor:TensorLoader",
    "nvjpeg": "loaders.nvjpeg:NvjpegLoader",
    "dali": "loaders.dali:DaliLoader",
    "ffcv": "loaders.ffcv:FfcvLoader",
    "baseline": "loaders.baseline:BaselineLoader",
}
# Backends whose batches go through DeviceAugment, where --data.clahe is applied.
CLAHE_LOADERS = ("plain", "tensor", "nvjpeg")


class BadFiles:
    """Files that failed to decode at run time: each reported once, counted for the summary."""

    def __init__(self):
        self.items: dict[str, str] = {}

    def add(self, path: str, reason: str) -> None:
        if path not in self.items:
            self.items[path] = reason
            log.warning("skipping %s: %s", path, reason)


def augment_spec(opts: LoaderSpec, image_size: int, train: bool, out_dtype: torch.dtype = torch.float32) -> AugmentSpec:
    """The device augmentation a loader with these options runs (the plan's calibration times
    the same spec)."""
    return AugmentSpec(
        out_size=image_size, train=train, scale_min=opts.crop_scale_min,
        ratio=(1 / opts.crop_ratio, opts.crop_ratio),
        hflip=opts.hflip, vflip=opts.vflip, rot90=opts.rot90,
        jitter=opts.color_jitter, eval_crop=opts.eval_crop, out_dtype=out_dtype,
        clahe=opts.clahe,  # CLAHE runs in DeviceAugment, before the geometry
        color_constancy=opts.color_constancy)


class Loader:
    """Base for device loaders. Subclasses implement `_batch(indices_np_or_tensor, key)`."""

    name = "base"

    def __init__(self, ds: Dataset, split: Split, opts: LoaderSpec, device: torch.device, train: bool,
                 sampler: EpochSampler | None = None, out_dtype: torch.dtype = torch.float32):
        self.ds, self.split, self.opts, self.device, self.train = ds, split, opts, device, train
        self.sampler = sampler
        # Under DDP the configured batches are global: each rank holds its share (engine/run/distributed.py).
        self.rank, self.world_size = shard_of(sampler)
        self.batch_size = per_rank_batch(opts.batch_size if train else opts.eval_batch_size, self.world_size, train)
        self.workers = default_workers(opts.workers)
        self.image_size = opts.image_size or ds.native_size
        self.bad = BadFiles()
        self.spec = augment_spec(opts, self.image_size, train, out_dtype)
        self.augment = DeviceAugment(self.spec, opts.seed + (0 if train else 1), device)
        self.labels = label_tensor(split.labels, device)
        self.epoch, self.start_step = 0, 0
        self.order: torch.Tensor | None = None

    # -- order ------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        if self.train:
            return self.sampler.steps
        return -(-len(self.split) // (self.batch_size * self.world_size))

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def epoch_order(self) -> tuple[torch.Tensor, int]:
        """(indices padded to whole batches, number of real entries)."""
        if self.train:
            order = self.sampler.epoch_indices(self.epoch)
            return order, len(order)
        # Evaluation: rank r takes the r-th contiguous block of the padded split, so the ranks'
        # real rows concatenated in rank order are the split in order (exact metric merges).
        n = len(self.split)
        per_rank = self.steps * self.batch_size
        start = self.rank * per_rank
        order = (start + torch.arange(per_rank, device=self.device)) % max(n, 1)
        return order, min(max(n - start, 0), per_rank)

    def batch_labels(self, order: torch.Tensor, real: int, step: int, failed=()) -> torch.Tensor:
        """The step's labels; padded rows and the `failed` (undecodable) rows get PAD_LABEL."""
        idx = order[step * self.batch_size:(step + 1) * self.batch_size]
        labels = self.labels[idx]
        if real < len(order):  # only evaluation pads
            pos = torch.arange(step * self.batch_size, (step + 1) * self.batch_size, device=self.device)
            labels = torch.where(row_mask(pos < real, labels), labels, torch.full_like(labels, PAD_LABEL))
        if failed:
            labels[list(failed)] = PAD_LABEL  # labels is a copy: indexing with a tensor copies
        return labels

    def key(self, step: int) -> int:
        if not self.train:
            return step
        # Ranks draw different augmentations for their rows; one process keeps its old keys.
        return (self.epoch * 1_000_003 + step) * self.world_size + self.rank

    def prefetched(self, decode_batch: Callable, workers: int) -> Iterator[tuple[int, object, torch.Tensor]]:
        """(step, decoded, labels) in order while a window of batches decodes ahead in threads.

        `decode_batch(positions)` returns (decoded, failed rows); failed rows get label -1, so
        the batch keeps its shape and no label shifts.
        """
        order, real = self.epoch_order()
        order_np = host_indices(order)
        bs = self.batch_size
        submit = lambda pool, step: pool.submit(decode_batch, order_np[step * bs:(step + 1) * bs])
        with ThreadPoolExecutor(workers) as pool:
            steps = iter(range(self.start_step, self.steps))
            pending = deque()
            for step in steps:  # fill the window so decoding runs ahead of training
                pending.append((step, submit(pool, step)))
                if len(pending) >= workers + 1:
                    break
            while pending:
                step, future = pending.popleft()
                nxt = next(steps, None)
                if nxt is not None:
                    pending.append((nxt, submit(pool, nxt)))
                decoded, failed = future.result()
                yield step, decoded, self.batch_labels(order, real, step, failed)
        self.start_step = 0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError


def label_tensor(labels: np.ndarray, device: torch.device) -> torch.Tensor:
    """int64 class per row; multi-label findings (N x K) as float32 0/1, padded rows all PAD_LABEL."""
    dtype = torch.float32 if np.asarray(labels).ndim == 2 else torch.int64
    return torch.as_tensor(labels, dtype=dtype, device=device)


def row_mask(rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A per-row boolean shaped to select whole rows of `labels` (1-D classes or N x K findings)."""
    return rows.view(-1, *([1] * (labels.ndim - 1)))


def available(name: str) -> bool:
    module = REGISTRY[name].split(":")[0]
    checks = {"dali": "nvidia.dali", "ffcv": "ffcv"}
    if name in checks and importlib.util.find_spec(checks[name]) is None:
        return False
    return importlib.util.find_spec(module) is not None


CPU_DECODE_ONCE_MAX = 20_000  # file images `auto` decodes up front on a CPU device (tensor); above: plain


def choose_backend(name: str, ds: Dataset, device: torch.device) -> tuple[str, str]:
    """(backend, why) for `--loader NAME`, `auto` picking the fastest that can run here."""
    in_memory = ds.train.images is not None
    if name != "auto":
        if name not in REGISTRY:
            raise ConfigError(f"--loader {name}: unknown; choose from auto, {', '.join(REGISTRY)}")
        if not available(name):
            raise ConfigError(f"--loader {name} is not installed here; install the extra: pip install -e .[{name}]")
        return name, "requested"
    if in_memory:
        return "tensor", "dataset is an in-memory array: held as one uint8 tensor on the device"
    if device.type == "cuda":
        if available("dali"):
            return "dali", "GPU present and DALI installed: nvJPEG decode + GPU augmentation"
        if available("nvjpeg"):
            return "nvjpeg", "GPU present, DALI not installed: torchvision nvJPEG decode on the GPU"
    n, s = len(ds.train) + len(ds.val) + len(ds.test), ds.native_size
    if device.type != "cuda" and n > CPU_DECODE_ONCE_MAX:
        # Measured (bench/results/cpu-scale-isic.md): 40k 128-px JPEGs took 76 s to decode before
        # the first step on the loaded 2-core machine, while a CPU model step, not decoding, sets the rate.
        return "plain", (f"{n} images: decoding them all before the first step would take minutes on this CPU; "
                         "decoding per batch in threads")
    if n * s * s * 3 < 4 * 2**30:
        return "tensor", f"no GPU decoder here; {n} images x {s}px fit in memory, decoded once"
    return "plain", "dataset too large to hold decoded; decoding per batch in threads"


def build_loader(name: str, ds: Dataset, split: str, opts: LoaderSpec, device: torch.device, train: bool,
          sampler: EpochSampler | None = None, out_dtype: torch.dtype = torch.float32) -> Loader:
    if opts.clahe and name not in CLAHE_LOADERS:  # never silently skip a requested step
        raise ConfigError(f"--data.clahe runs in the device augmentation, which --loader {name} does not use; "
                          f"use --loader {'|'.join(CLAHE_LOADERS)}")
    if opts.color_constancy and name not in CLAHE_LOADERS:  # same place in the pipeline as CLAHE
        raise ConfigError(f"--data.color_constancy runs in the device augmentation, which --loader {name} does not "
                          f"use; use --loader {'|'.join(CLAHE_LOADERS)}")
    module, cls = REGISTRY[name].split(":")
    loader_cls = getattr(importlib.import_module(module), cls)
    loader = loader_cls(ds, ds.split(split), opts, device, train, sampler, out_dtype)
    if loader.split.meta is not None:  # metadata fusion: yield (images, labels, meta)
        from loaders.tabular import MetaLoader
        return MetaLoader(loader)
    return loader


def shard_of(sampler: EpochSampler | None) -> tuple[int, int]:
    """(rank, world size) of a loader: its sampler's for training, the process group's for
    evaluation (every rank evaluates a disjoint block), (0, 1) in a single process."""
    if sampler is not None:
        return sampler.rank, sampler.world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def make_sampler(ds: Dataset, spec: SamplerSpec, device: torch.device, rank: int = 0,
                 world_size: int = 1) -> EpochSampler:
    labels = torch.as_tensor(ds.train.labels, dtype=torch.int64, device=device)
    weights, strata = None, ds.num_classes
    if labels.ndim == 2:  # findings: the sampler strata are each image's rarest finding
        weights = rarest_finding_weights(labels, spec.alpha) if spec.kind == "balanced" else None
        labels, strata = torch.as_tensor(stratify_key(ds.train.labels), device=device), ds.num_classes + 1
    # spec.batch_size is the global batch; the sampler deals each rank its share.
    return EpochSampler(labels, strata, per_rank_batch(spec.batch_size, world_size, train=True),
                        kind=spec.kind, alpha=spec.alpha, replacement=spec.replacement, weights=weights,
                        seed=spec.seed, rank=rank, world_size=world_size)


def host_indices(order: torch.Tensor) -> np.ndarray:
    # Sync point (once per epoch, outside the step): file backends need the order on the host.
    return order.cpu().numpy()
