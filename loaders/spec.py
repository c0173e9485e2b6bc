"""What the data layer needs to know, and nothing more: small frozen specs the engine fills
from its resolved config (engine/options/resolve.py). Loaders never see the engine's `Config`.

The options these specs carry are declared here, once (`opt`: default, bounds, help); the
engine's `DataConfig` and `SamplerConfig` reuse these declarations (common.options.like)."""
from __future__ import annotations

from dataclasses import dataclass

from common.cpu_wait import available_cores
from common.options import like, opt


def default_workers(requested: int) -> int:
    """Decode threads: the requested count, or one per core this process may use when 0 (the
    option's default): its affinity mask, which containers and taskset narrow, not the machine's."""
    return requested or available_cores()


def per_rank_batch(global_batch: int, world_size: int, train: bool) -> int:
    """The configured batches are global; under DDP each rank holds its share. Training batches
    divide exactly (checked at set-up); evaluation rounds up so every row is scored."""
    return global_batch // world_size if train else -(-global_batch // world_size)


@dataclass(frozen=True)
class DataSpec:
    """How to read and split a dataset (`loaders.datasets.load_dataset`)."""
    path: str = opt("synthetic", path=True,
                    help="a MedMNIST-style .npz, a class-per-folder tree, a folder with a CSV, or 'synthetic'")
    val_fraction: float = opt(0.15, ge=0.0, le=0.5, help="validation share, used when the data has no official split")
    test_fraction: float = opt(0.15, ge=0.0, le=0.5, help="test share, used when the data has no official split")
    verify: str = opt("header", choices=("header", "full"), help="how JPEGs are checked before training")
    workers: int = opt(0, ge=0, le=256, help="decode threads; 0 = number of cores")
    max_samples: int = opt(0, ge=0, help="0 = all images; >0 keeps a stratified subset of this many")
    synthetic_count: int = opt(3000, ge=20, help="images in the embedded 'synthetic' dataset")
    cache_dir: str = opt("", path=True, help="where 'synthetic' JPEGs are written; '' = ~/.cache/medtrain")


@dataclass(frozen=True)
class SamplerSpec:
    """Which training rows each epoch draws (`loaders.base.make_sampler`); `batch_size` is global."""
    batch_size: int = opt(64, ge=1, help="training images per step")
    kind: str = opt("uniform", choices=("uniform", "balanced"), help="how training images are drawn")
    alpha: float = opt(1.0, ge=0.0, le=1.0, help="balanced: class weight ~ n_c^-alpha (0 natural, 1 balanced)")
    replacement: bool = opt(True, help="balanced: draw with replacement")
    seed: int = 0


@dataclass(frozen=True)
class LoaderSpec:
    """How a backend decodes, augments and batches (`loaders.base.build_loader`). Batches are global."""
    batch_size: int = like(SamplerSpec, "batch_size")
    eval_batch_size: int = like(SamplerSpec, "batch_size")
    image_size: int = opt(0, ge=0, le=4096, help="model input size in pixels; 0 = the dataset's native size")
    crop_scale_min: float = opt(0.35, ge=0.01, le=1.0, help="random-resized-crop area range [min, 1]; 1 = no crop")
    crop_ratio: float = opt(4 / 3, ge=1.0, le=4.0, help="random-resized-crop aspect range [1/r, r]; 1 = square")
    hflip: bool = opt(True, help="random horizontal flips")
    vflip: bool = opt(True, help="random vertical flips (lesions have no 'up')")
    rot90: bool = opt(True, help="random quarter turns")
    color_jitter: float = opt(0.0, ge=0.0, le=1.0, help="brightness/contrast/saturation jitter strength; 0 = off")
    eval_crop: float = opt(1.0, ge=0.1, le=1.0, help="evaluation: centre crop of this fraction, then resize")
    clahe: bool = opt(False, help="contrast-limited adaptive histogram equalization on the device")
    color_constancy: bool = False  # Shades of Gray (p = 6) in the device augmentation, before CLAHE
    workers: int = like(DataSpec, "workers")
    seed: int = 0
    cache_dir: str = ""           # where derived files (an FFCV .beton) are kept
