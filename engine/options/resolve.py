"""The parsed config made concrete, once: `resolve(cfg, dataset, world)`.

Parsing (engine/options/config.py) knows only the command line; some values depend on the dataset
(image size 0 = its native size) or the machine (0 workers = one per core, the global batch
split over the DDP world). They are computed here and nowhere else, into a frozen `Resolved`
whose `cfg` is a copy: the parsed config is never changed after parsing. The narrow specs the
data layer takes (loaders/spec.py) are cut from it here too.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from engine.options.config import Config
from loaders.spec import DataSpec, LoaderSpec, SamplerSpec, default_workers, per_rank_batch


def data_spec(cfg: Config) -> DataSpec:
    """What `load_dataset` needs; known before the dataset is (so it is not part of `Resolved`)."""
    d = cfg.data
    return DataSpec(path=d.path, val_fraction=d.val_fraction, test_fraction=d.test_fraction, verify=d.verify,
                    workers=default_workers(d.workers), max_samples=d.max_samples,
                    synthetic_count=d.synthetic_count, cache_dir=d.cache_dir)


def sampler_spec(cfg: Config) -> SamplerSpec:
    return SamplerSpec(batch_size=cfg.data.batch_size, kind=cfg.sampler.kind, alpha=cfg.sampler.alpha,
                       replacement=cfg.sampler.replacement, seed=cfg.train.seed)


def loader_spec(cfg: Config, native_size: int = 0) -> LoaderSpec:
    d = cfg.data
    return LoaderSpec(batch_size=d.batch_size, eval_batch_size=d.eval_batch_size or d.batch_size,
                      image_size=d.image_size or native_size, crop_scale_min=d.crop_scale_min,
                      crop_ratio=d.crop_ratio, hflip=d.hflip, vflip=d.vflip, rot90=d.rot90,
                      color_jitter=d.color_jitter, eval_crop=d.eval_crop, clahe=d.clahe,
                      color_constancy=d.color_constancy == "shades_of_gray",
                      workers=default_workers(d.workers), seed=cfg.train.seed, cache_dir=d.cache_dir)


@dataclass(frozen=True)
class Resolved:
    cfg: Config                   # a private copy with image_size and run.out concrete; read it, never write it
    image_size: int
    workers: int
    world_size: int
    train_batch: int              # per rank
    eval_batch: int               # per rank
    data: DataSpec
    loader: LoaderSpec
    sampler: SamplerSpec


def resolve(cfg: Config, dataset, world: int = 1, out: str = "") -> Resolved:
    """Everything that depends on the dataset (its native size) and the world size, once."""
    concrete = copy.deepcopy(cfg)
    concrete.data.image_size = cfg.data.image_size or dataset.native_size
    if out:
        concrete.run.out = out
    loader = loader_spec(concrete, dataset.native_size)
    return Resolved(cfg=concrete, image_size=concrete.data.image_size, workers=loader.workers, world_size=world,
                    train_batch=per_rank_batch(loader.batch_size, world, train=True),
                    eval_batch=per_rank_batch(loader.eval_batch_size, world, train=False),
                    data=data_spec(concrete), loader=loader, sampler=sampler_spec(concrete))
