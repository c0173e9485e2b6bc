"""Configuration: one dataclass per section, presets as plain functions, CLI overrides.

Resolution order: dataclass defaults -> preset -> command-line overrides. Every option is
reachable as `--section.key value`; the common ones also have the short flags of DESIGN.md.
An unknown option or a value of the wrong type is a `ConfigError`, which the entry points
turn into one line on stderr and exit status 2.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field, fields

from common.errors import ConfigError  # noqa: F401  (re-exported: the CLIs and tests name it here)


# ----------------------------------------------------------------------------- sections

@dataclass
class DataConfig:
    path: str = "synthetic"
    loader: str = "auto"          # auto|plain|tensor|dali|ffcv|nvjpeg|baseline
    image_size: int = 0           # model input size; 0 = the dataset's native size
    batch_size: int = 64
    eval_batch_size: int = 0      # 0 = same as batch_size
    workers: int = 0              # decode threads; 0 = number of cores
    val_fraction: float = 0.15    # used when the dataset has no official split
    test_fraction: float = 0.15
    crop_scale_min: float = 0.35  # random-resized-crop area range [min, 1]
    crop_ratio: float = 4 / 3     # random-resized-crop aspect range [1/r, r]; 1 = square crops
    hflip: bool = True
    vflip: bool = True            # lesions have no "up"
    rot90: bool = True
    color_jitter: float = 0.0     # brightness/contrast/saturation strength
    eval_crop: float = 1.0        # evaluation: centre crop of this fraction, then resize
    clahe: bool = False
    color_constancy: str = "none" # none|shades_of_gray (p = 6, on the device; kernels/color_constancy.py)
    synthetic_count: int = 3000   # images in the embedded `synthetic` dataset
    cache_dir: str = ""           # where `synthetic` JPEGs are written; "" = ~/.cache/medtrain
    max_samples: int = 0          # 0 = all; >0 keeps a stratified subset (for quick runs)
    verify: str = "header"        # header|full: how JPEGs are checked before training


@dataclass
class SamplerConfig:
    kind: str = "uniform"         # uniform|balanced
    alpha: float = 1.0            # class weight ~ n_c^-alpha (0 natural, 1 balanced)
    replacement: bool = True


@dataclass
class ModelConfig:
    name: str = "seedcnn"
    pretrained: str = ""          # local weights file, or "imagenet" (torchvision/timm cache; models/pretrained.py)
    dropout: float = 0.25
    metadata: str = ""            # comma-separated CSV columns fused with image features


@dataclass
class OptimConfig:
    name: str = "adamw"           # adamw|sgd
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    label_smoothing: float = 0.0
    clip_grad: float = 0.0        # 0 = off
    logit_adjust: float = 0.0     # tau of the logit-adjusted loss (logits + tau*log prior); 0 = off


@dataclass
class ScheduleConfig:
    name: str = "cosine"          # cosine|onecycle|plateau|constant
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    plateau_factor: float = 0.5
    plateau_patience: int = 2


@dataclass
class TrainConfig:
    epochs: int = 10
    amp: bool = False
    amp_dtype: str = "auto"       # auto|bf16|fp16 (fp16 uses a GradScaler; auto: bf16 only where native)
    compile: bool = False
    cuda_graph: bool = False
    device: str = "auto"          # auto|cpu|cuda
    seed: int = 0
    deterministic: bool = False
    patience: int = 0             # early stopping on the selection metric; 0 = off
    select: str = "balanced_accuracy"  # validation metric that picks the kept weights
    ema: float = 0.0              # EMA decay of weights; 0 = off
    mixup: float = 0.0            # Beta(a, a) mixing; 0 = off
    cutmix: float = 0.0
    log_interval: int = 50        # steps between reads of the device accumulators
    max_nonfinite: int = 20       # consecutive non-finite losses before the run stops
    progress: str = "auto"        # auto|on|off


@dataclass
class RunConfig:
    preset: str = ""
    out: str = ""                 # "" = runs/<timestamp>
    resume: str = ""
    tta: bool = False
    plan: str = "auto"            # auto: options not given are chosen from the data (engine/plan.py); off
    budget: float = 0.0           # training minutes the plan sizes epochs for; 0 = engine/plan.py's default


@dataclass
class EvalConfig:
    posthoc_adjust: bool = True   # choose a class-prior correction tau on validation (engine/decisions.py)
    target_sensitivity: float = 0.0  # binary: operating threshold reaching this val sensitivity; 0 = off


@dataclass
class WandbConfig:
    mode: str = "offline"         # offline|online|disabled
    project: str = "medtrain"


@dataclass
class DistConfig:
    sync_bn: bool = False
    timeout_s: int = 120


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "Config":
        cfg = Config()
        for section, values in d.items():
            for key, value in values.items():
                set_option(cfg, f"{section}.{key}", value)
        return cfg


# ----------------------------------------------------------------------------- presets

def preset_dermamnist(cfg: Config) -> None:
    """MedMNIST DermaMNIST at 28 px: chosen by the experiments in bench/results/recipes_cpu.md.

    The seed CNN with lossless augmentation only (flips and quarter turns: at 28 px any crop
    or aspect change is a resampling blur that cost 0.5-1.3 points of test accuracy), label
    smoothing, a one-cycle schedule over 48 epochs, weight EMA, and the kept epoch chosen by
    validation accuracy (the metric this recipe is judged by). Test accuracy, mean of 3 seeds:
    0.787 (macro AUC 0.938); ResNet-9 (8x the multiply-adds) was not better. 185-202 s for
    the whole run on an idle 2-core CPU."""
    cfg.data.image_size = 28
    cfg.data.batch_size = 128
    cfg.data.crop_scale_min = 1.0
    cfg.data.crop_ratio = 1.0
    cfg.model.name = "seedcnn"
    cfg.model.dropout = 0.1
    cfg.optim.lr = 2e-3
    cfg.optim.weight_decay = 0.05
    cfg.optim.label_smoothing = 0.1
    cfg.schedule.name = "onecycle"
    cfg.train.epochs = 48
    cfg.train.ema = 0.999
    cfg.train.select = "accuracy"


def preset_ham10000(cfg: Config) -> None:
    """HAM10000 dermoscopy JPEGs at 64 px with the seed CNN: affordable on a 2-core CPU (see
    bench/results/recipes_cpu.md). 16 epochs, not 8: balanced accuracy 0.570 vs 0.551 in 5-fold
    CV, higher on every fold. On a GPU use `--image-size 224 --model resnet18`."""
    cfg.data.image_size = 64
    cfg.data.batch_size = 64
    cfg.data.crop_scale_min = 0.4
    cfg.data.color_jitter = 0.2
    cfg.sampler.kind = "balanced"
    cfg.sampler.alpha = 0.5          # half-way to balanced: recall on rare classes without starving nv
    cfg.model.name = "seedcnn"
    cfg.model.dropout = 0.2
    cfg.optim.lr = 2e-3
    cfg.optim.label_smoothing = 0.1
    cfg.schedule.name = "cosine"
    cfg.train.epochs = 16


def preset_smoke(cfg: Config) -> None:
    """Seconds-long run for tests and demos."""
    cfg.data.synthetic_count = 400
    cfg.data.batch_size = 32
    cfg.train.epochs = 2
    cfg.train.progress = "off"


PRESETS = {"dermamnist": preset_dermamnist, "ham10000": preset_ham10000, "smoke": preset_smoke}


# ----------------------------------------------------------------------------- overrides

SHORT_FLAGS = {
    "preset": "run.preset", "data": "data.path", "loader": "data.loader", "model": "model.name",
    "epochs": "train.epochs", "batch-size": "data.batch_size", "lr": "optim.lr",
    "amp": "train.amp", "compile": "train.compile", "cuda-graph": "train.cuda_graph",
    "sampler": "sampler.kind", "device": "train.device", "seed": "train.seed",
    "out": "run.out", "resume": "run.resume", "tta": "run.tta",
    "image-size": "data.image_size", "workers": "data.workers", "wandb": "wandb.mode",
    "budget": "run.budget",
}

CHOICES = {
    "data.loader": ("auto", "plain", "tensor", "dali", "ffcv", "nvjpeg", "baseline"),
    "data.verify": ("header", "full"),
    "data.color_constancy": ("none", "shades_of_gray"),
    "run.plan": ("auto", "off"),
    "sampler.kind": ("uniform", "balanced"),
    "optim.name": ("adamw", "sgd"),
    "schedule.name": ("cosine", "onecycle", "plateau", "constant"),
    "train.amp_dtype": ("bf16", "fp16", "auto"),
    "train.select": ("balanced_accuracy", "accuracy", "auc_macro", "f1_macro"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.progress": ("auto", "on", "off"),
    "wandb.mode": ("offline", "online", "disabled"),
}

# (minimum, maximum) inclusive; None = unbounded.
BOUNDS = {
    "data.batch_size": (1, None), "data.eval_batch_size": (0, None), "data.image_size": (0, 4096),
    "data.workers": (0, 256), "data.val_fraction": (0.0, 0.5), "data.test_fraction": (0.0, 0.5),
    "data.crop_scale_min": (0.01, 1.0), "data.crop_ratio": (1.0, 4.0), "data.eval_crop": (0.1, 1.0),
    "data.color_jitter": (0.0, 1.0),
    "data.synthetic_count": (20, None), "data.max_samples": (0, None),
    "sampler.alpha": (0.0, 1.0), "optim.lr": (0.0, 10.0), "optim.weight_decay": (0.0, None),
    "optim.label_smoothing": (0.0, 0.99), "optim.clip_grad": (0.0, None),
    "train.epochs": (1, None), "train.ema": (0.0, 0.99999), "train.log_interval": (1, None),
    "train.patience": (0, None), "train.max_nonfinite": (1, None), "model.dropout": (0.0, 0.99),
    "schedule.warmup_epochs": (0.0, None), "schedule.min_lr_ratio": (0.0, 1.0),
    "dist.timeout_s": (1, 86400),
    "optim.logit_adjust": (0.0, 5.0), "run.budget": (0.0, 10080.0), "eval.target_sensitivity": (0.0, 0.999),
}


def all_keys(cfg: Config) -> list[str]:
    return [f"{s.name}.{f.name}" for s in fields(cfg) for f in fields(getattr(cfg, s.name))]


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    return f" (did you mean --{close[0]}?)" if close else ""


def _coerce(key: str, raw, kind: type):
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    text = str(raw).strip()
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return text
    except ValueError:
        raise ConfigError(f"--{key} expects {kind.__name__}, got {text!r}") from None


def set_option(cfg: Config, key: str, raw) -> None:
    if "." not in key:
        raise ConfigError(f"unknown option --{key}{_suggest(key, list(SHORT_FLAGS) + all_keys(cfg))}")
    section_name, name = key.split(".", 1)
    section = getattr(cfg, section_name, None)
    if section is None or not dataclasses.is_dataclass(section) or name not in {f.name for f in fields(section)}:
        raise ConfigError(f"unknown option --{key}{_suggest(key, all_keys(cfg) + list(SHORT_FLAGS))}")
    kind = type(getattr(type(section)(), name))
    value = _coerce(key, raw, kind)
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"--{key} must be one of {', '.join(CHOICES[key])}; got {value!r}"
                          f"{_suggest(str(value), list(CHOICES[key])).replace('--', '')}")
    if isinstance(value, float) and not math.isfinite(value):  # nan slips past every bound check
        raise ConfigError(f"--{key} must be a finite number; got {value}")
    if key in BOUNDS:
        lo, hi = BOUNDS[key]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"--{key} must be {rng}; got {value}")
    if key == "data.image_size" and 0 < value < 8:  # every model pools 3 times; 0 keeps the native size
        raise ConfigError(f"--{key} must be 0 (the dataset's own size) or at least 8; got {value}")
    setattr(section, name, value)


def _split_argv(argv: list[str]) -> list[tuple[str, str | None]]:
    """`--key value`, `--key=value` and bare boolean `--flag` into (key, raw-or-None) pairs."""
    pairs, i = [], 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {token!r}: options look like --key value")
        key, eq, value = token[2:].partition("=")
        if eq:
            pairs.append((key, value))
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            pairs.append((key, argv[i + 1]))
            i += 2
        else:
            pairs.append((key, None))
            i += 1
    return pairs


def parse_args(argv: list[str], base: Config | None = None) -> Config:
    """Build the resolved Config; raises ConfigError with a one-line message on any mistake."""
    cfg = base or Config()
    pairs = []
    for key, raw in _split_argv(argv):
        full = SHORT_FLAGS.get(key, key.replace("-", "_") if "." in key else key)
        if "." in full:
            section, name = full.split(".", 1)
            full = f"{section}.{name.replace('-', '_')}"
        pairs.append((key, full, raw))
    # Which options the user gave: the plan (engine/plan.py) fills in only the others.
    cfg._explicit = frozenset(full for _, full, _ in pairs)
    presets = [raw for _, full, raw in pairs if full == "run.preset"]
    if presets:
        name = presets[-1] or ""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}"
                              f"{_suggest(name, list(PRESETS)).replace('--', '')}")
        PRESETS[name](cfg)
    for key, full, raw in pairs:
        if raw is None:
            is_bool = "." in full and _is_bool_option(cfg, full)
            if not is_bool:
                if "." not in full or full not in all_keys(cfg):
                    set_option(cfg, full, "")  # raises "unknown option" with a suggestion
                raise ConfigError(f"--{key} needs a value")
            raw = "true"
        set_option(cfg, full, raw)
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1.0:
        raise ConfigError(f"--data.val_fraction {cfg.data.val_fraction} + --data.test_fraction "
                          f"{cfg.data.test_fraction} leave nothing for training; keep their sum below 1")
    return cfg


def explicit_options(cfg: Config) -> frozenset | None:
    """The dotted keys given on the command line; None for a Config not built by parse_args."""
    return getattr(cfg, "_explicit", None)


def _is_bool_option(cfg: Config, key: str) -> bool:
    section, name = key.split(".", 1)
    obj = getattr(cfg, section, None)
    return dataclasses.is_dataclass(obj) and isinstance(getattr(obj, name, None), bool)


def usage() -> str:
    cfg = Config()
    short = "  ".join(f"--{k}" for k in SHORT_FLAGS)
    lines = ["usage: python -m engine.train [options]", "", f"short flags: {short}", "", "all options:"]
    for key in all_keys(cfg):
        section, name = key.split(".", 1)
        default = getattr(getattr(cfg, section), name)
        choice = f"  {{{'|'.join(CHOICES[key])}}}" if key in CHOICES else ""
        lines.append(f"  --{key} {json.dumps(default)}{choice}")
    lines.append(f"presets: {', '.join(sorted(PRESETS))}")
    return "\n".join(lines)
