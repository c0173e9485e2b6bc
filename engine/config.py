"""Configuration: one dataclass per section, presets as plain functions, CLI overrides.

Resolution order: dataclass defaults -> preset -> command-line overrides. Every option is
reachable as `--section.key value`; the common ones also have short flags (SHORT_FLAGS).
Each option is declared once, with its rules beside it (`opt(...)`: choices, bounds as torch's
own classes bound the same numbers, path handling); rules between two options live in
`check_combinations`. An unknown option, a value of the wrong type or out of bounds is a
`ConfigError`, which the CLI helper (common/cli.py) turns into one line on stderr and exit
status 2. Imports nothing heavy: `--help` and every mistake answer before torch loads.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields

from common.cli import expand_path, split_argv, suggest
from common.errors import ConfigError  # noqa: F401  (re-exported: the CLIs and tests name it here)


# ----------------------------------------------------------------------------- fields

def opt(default, *, help: str = "", choices: tuple | None = None, ge=None, gt=None, le=None, lt=None,
        path: bool = False):
    """A config field with its validation beside it: a one-line `help` shown by `--help`, allowed
    values, bounds (ge/gt/le/lt, as torch's own classes bound the same numbers), or `path` (`~`
    expanded, never empty)."""
    meta = {k: v for k, v in (("choices", choices), ("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if help:
        meta["help"] = help
    if path:
        meta["path"] = True
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- sections

@dataclass
class DataConfig:
    path: str = opt("synthetic", path=True)
    loader: str = opt("auto", choices=("auto", "plain", "tensor", "dali", "ffcv", "nvjpeg", "baseline"))
    image_size: int = opt(0, ge=0, le=4096)      # model input size; 0 = the dataset's native size
    batch_size: int = opt(64, ge=1)
    eval_batch_size: int = opt(0, ge=0)          # 0 = same as batch_size
    workers: int = opt(0, ge=0, le=256)          # decode threads; 0 = number of cores
    val_fraction: float = opt(0.15, ge=0.0, le=0.5)   # used when the dataset has no official split
    test_fraction: float = opt(0.15, ge=0.0, le=0.5)
    crop_scale_min: float = opt(0.35, ge=0.01, le=1.0)  # random-resized-crop area range [min, 1]
    crop_ratio: float = opt(4 / 3, ge=1.0, le=4.0)      # random-resized-crop aspect range [1/r, r]; 1 = square
    hflip: bool = True
    vflip: bool = True            # lesions have no "up"
    rot90: bool = True
    color_jitter: float = opt(0.0, ge=0.0, le=1.0)      # brightness/contrast/saturation strength
    eval_crop: float = opt(1.0, ge=0.1, le=1.0)         # evaluation: centre crop of this fraction, then resize
    clahe: bool = False
    color_constancy: str = opt("none", choices=("none", "shades_of_gray"))  # p = 6, on the device (kernels/color_constancy.py)
    synthetic_count: int = opt(3000, ge=20)      # images in the embedded `synthetic` dataset
    cache_dir: str = opt("", path=True)          # where `synthetic` JPEGs are written; "" = ~/.cache/medtrain
    max_samples: int = opt(0, ge=0)              # 0 = all; >0 keeps a stratified subset (for quick runs)
    verify: str = opt("header", choices=("header", "full"))  # how JPEGs are checked before training


@dataclass
class SamplerConfig:
    kind: str = opt("uniform", choices=("uniform", "balanced"))
    alpha: float = opt(1.0, ge=0.0, le=1.0)     # class weight ~ n_c^-alpha (0 natural, 1 balanced)
    replacement: bool = True


@dataclass
class ModelConfig:
    name: str = "seedcnn"
    pretrained: str = opt("", path=True)        # local weights file, or "imagenet" (library caches; models/pretrained.py)
    dropout: float = opt(0.25, ge=0.0, le=0.99)
    metadata: str = ""                          # comma-separated CSV columns fused with image features


@dataclass
class OptimConfig:
    name: str = opt("adamw", choices=("adamw", "sgd"))
    lr: float = opt(2e-3, gt=0.0, le=10.0)
    weight_decay: float = opt(0.05, ge=0.0)
    momentum: float = opt(0.9, ge=0.0, lt=1.0)  # sgd; Nesterov is used when momentum > 0
    label_smoothing: float = opt(0.0, ge=0.0, le=0.99)
    clip_grad: float = opt(0.0, ge=0.0)         # 0 = off
    logit_adjust: float = opt(0.0, ge=0.0, le=5.0)  # tau of the logit-adjusted loss (logits + tau*log prior); 0 = off
    pos_weight: str = opt("prior", choices=("prior", "none"),
                          help="multi-label findings: weight each finding's positives by negatives/positives in "
                               "the training split (sigmoid BCE pos_weight); none = plain BCE")


@dataclass
class ScheduleConfig:
    name: str = opt("cosine", choices=("cosine", "onecycle", "plateau", "constant"))
    warmup_epochs: float = opt(1.0, ge=0.0)
    min_lr_ratio: float = opt(0.01, ge=0.0, le=1.0)
    plateau_factor: float = opt(0.5, gt=0.0, lt=1.0)   # torch's ReduceLROnPlateau: factor < 1
    plateau_patience: int = opt(2, ge=0)


@dataclass
class TrainConfig:
    epochs: int = opt(10, ge=1)
    amp: bool = False
    amp_dtype: str = opt("auto", choices=("bf16", "fp16", "auto"))  # fp16 uses a GradScaler; auto: bf16 only where native
    compile: bool = False
    cuda_graph: bool = False
    device: str = opt("auto", choices=("auto", "cpu", "cuda"))
    seed: int = opt(0, ge=0, le=2**63 - 1)
    deterministic: bool = False
    patience: int = opt(0, ge=0)                # early stopping on the selection metric; 0 = off
    select: str = opt("balanced_accuracy", choices=("balanced_accuracy", "accuracy", "auc_macro", "f1_macro"))
    ema: float = opt(0.0, ge=0.0, le=0.99999)   # EMA decay of weights; 0 = off
    mixup: float = opt(0.0, ge=0.0)             # Beta(a, a) mixing; 0 = off
    cutmix: float = opt(0.0, ge=0.0)
    log_interval: int = opt(50, ge=1)           # steps between reads of the device accumulators
    max_nonfinite: int = opt(20, ge=1)          # consecutive non-finite losses before the run stops
    progress: str = opt("auto", choices=("auto", "on", "off"))


@dataclass
class RunConfig:
    preset: str = ""
    out: str = opt("", path=True)               # "" = runs/<timestamp>
    resume: str = opt("", path=True)            # a run folder or its checkpoint.pt
    tta: bool = False
    plan: str = opt("auto", choices=("auto", "off"))  # auto: options not given are chosen from the data (engine/plan.py)
    budget: float = opt(0.0, ge=0.0, le=10080.0)     # training minutes the plan sizes epochs for; 0 = engine/plan.py's default


@dataclass
class EvalConfig:
    posthoc_adjust: bool = False  # choose a class-prior correction tau on validation (engine/decisions.py); the plan sets it
    target_sensitivity: float = opt(0.0, ge=0.0, le=0.999)  # binary: operating threshold reaching this val sensitivity; 0 = off
    finding_threshold: str = opt("youden", choices=("youden", "f1", "half"),
                                 help="multi-label findings: per-finding decision threshold chosen on validation "
                                      "(youden: max sensitivity + specificity; f1: max F1; half: 0.5)")
    calibrate: bool = opt(True, help="fit a temperature on validation after training (engine/temperature.py); "
                                     "applied before the prior correction and threshold")


@dataclass
class WandbConfig:
    mode: str = opt("offline", choices=("offline", "online", "disabled"))
    project: str = "medtrain"


@dataclass
class DistConfig:
    sync_bn: bool = False
    timeout_s: int = opt(120, ge=1, le=86400)
    nccl_error_handling: int = opt(2, ge=0, le=3, help="TORCH_NCCL_ASYNC_ERROR_HANDLING under torchrun, whatever "
                                   "the launcher set: 2 aborts the communicator and exits with PeerLost's one line; "
                                   "1/3 kill the rank from NCCL's watchdog (SIGABRT); 0 waits forever")


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
    validation accuracy (the metric this recipe is judged by). ResNet-9 (8x the multiply-adds)
    was not better. Accuracy and wall time: docs/recipes.md."""
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

SECTIONS = {f.name: f.type for f in fields(Config)}
CHECKPOINT_NAME = "checkpoint.pt"  # engine/checkpoint.py writes it; --resume accepts it or its folder


def _field_table() -> dict[str, dataclasses.Field]:
    return {f"{s.name}.{f.name}": f for s in fields(Config) for f in fields(s.default_factory)}


FIELDS = _field_table()
# Derived from the fields' own declarations (opt(...) above), for readers and usage().
CHOICES = {k: f.metadata["choices"] for k, f in FIELDS.items() if "choices" in f.metadata}
PATHS = tuple(k for k, f in FIELDS.items() if f.metadata.get("path"))


def all_keys(cfg: Config | None = None) -> list[str]:
    return list(FIELDS)


def _coerce(key: str, raw, kind: type):
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
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


def _bound_text(meta: dict) -> str:
    lo = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = ("]", meta["le"]) if "le" in meta else (")", meta["lt"]) if "lt" in meta else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {lo[1]}"
    return f"{'<=' if hi[0] == ']' else '<'} {hi[1]}"


def _check(key: str, value, meta: dict) -> None:
    """The field's own rules (opt(...)): choices, finite numbers, bounds."""
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"--{key} must be one of {', '.join(meta['choices'])}; got {value!r}"
                          f"{suggest(str(value), list(meta['choices'])).replace('--', '')}")
    if isinstance(value, float) and not math.isfinite(value):  # nan slips past every bound check
        raise ConfigError(f"--{key} must be a finite number; got {value}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    outside = (("ge" in meta and value < meta["ge"]) or ("gt" in meta and value <= meta["gt"])
               or ("le" in meta and value > meta["le"]) or ("lt" in meta and value >= meta["lt"]))
    if outside:
        raise ConfigError(f"--{key} must be {_bound_text(meta)}; got {value}")


def _as_path(key: str, value: str) -> str:
    """`~` expanded; an empty --data (an unset shell variable) refused; --resume takes the run
    folder or its checkpoint.pt."""
    if key == "data.path" and not value.strip():
        raise ConfigError("--data is empty (an unset shell variable?); give a dataset path or 'synthetic'")
    value = expand_path(value)
    if key == "run.resume" and os.path.basename(value.rstrip("/")) == CHECKPOINT_NAME:
        value = os.path.dirname(value.rstrip("/")) or "."
    return value


def set_option(cfg: Config, key: str, raw) -> None:
    if key not in FIELDS:
        raise ConfigError(f"unknown option --{key}{suggest(key, all_keys() + list(SHORT_FLAGS))}")
    section_name, name = key.split(".", 1)
    meta = FIELDS[key].metadata
    value = _coerce(key, raw, type(FIELDS[key].default))
    if meta.get("path"):
        value = _as_path(key, value)
    _check(key, value, meta)
    if key == "data.image_size" and 0 < value < 8:  # every model pools 3 times; 0 keeps the native size
        raise ConfigError(f"--{key} must be 0 (the dataset's own size) or at least 8; got {value}")
    setattr(getattr(cfg, section_name), name, value)


def check_combinations(cfg: Config) -> None:
    """Rules that involve two options, each one line naming both."""
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1.0:
        raise ConfigError(f"--data.val_fraction {cfg.data.val_fraction} + --data.test_fraction "
                          f"{cfg.data.test_fraction} leave nothing for training; keep their sum below 1")
    if cfg.model.metadata and cfg.train.cuda_graph:
        raise ConfigError("--model.metadata with --cuda-graph is not supported yet; drop one of them")


def _full_key(key: str) -> str:
    full = SHORT_FLAGS.get(key, key.replace("-", "_") if "." in key else key)
    if "." in full:
        section, name = full.split(".", 1)
        full = f"{section}.{name.replace('-', '_')}"
    return full


def _apply_preset(cfg: Config, pairs: list[tuple[str, str, str | None]]) -> None:
    presets = [raw for _, full, raw in pairs if full == "run.preset"]
    if presets:
        name = presets[-1] or ""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}"
                              f"{suggest(name, list(PRESETS)).replace('--', '')}")
        PRESETS[name](cfg)


def parse_args(argv: list[str], base: Config | None = None) -> Config:
    """Build the parsed Config; raises ConfigError with a one-line message on any mistake."""
    cfg = base or Config()
    pairs = [(key, _full_key(key), raw) for key, raw in split_argv(argv)]
    # Which options the user gave: the plan (engine/plan.py) fills in only the others.
    cfg._explicit = frozenset(full for _, full, _ in pairs)
    _apply_preset(cfg, pairs)  # presets first, whatever the order: options override them
    for key, full, raw in pairs:
        if raw is None:
            if full not in FIELDS:
                set_option(cfg, full, "")  # raises "unknown option" with a suggestion
            if type(FIELDS[full].default) is not bool:
                raise ConfigError(f"--{key} needs a value")
            raw = "true"
        set_option(cfg, full, raw)
    check_combinations(cfg)
    return cfg


def explicit_options(cfg: Config) -> frozenset | None:
    """The dotted keys given on the command line; None for a Config not built by parse_args."""
    return getattr(cfg, "_explicit", None)


def usage() -> str:
    cfg = Config()
    short = "  ".join(f"--{k}" for k in SHORT_FLAGS)
    lines = ["usage: python -m engine.train [options]", "", f"short flags: {short}", "", "all options:"]
    for key in all_keys(cfg):
        section, name = key.split(".", 1)
        default = getattr(getattr(cfg, section), name)
        choice = f"  {{{'|'.join(CHOICES[key])}}}" if key in CHOICES else ""
        meta = FIELDS[key].metadata
        bound = f"  ({_bound_text(meta)})" if any(k in meta for k in ("ge", "gt", "le", "lt")) else ""
        lines.append(f"  --{key} {json.dumps(default)}{choice}{bound}" + (f"  {meta['help']}" if meta.get("help") else ""))
    lines.append(f"presets: {', '.join(sorted(PRESETS))}")
    return "\n".join(lines)
