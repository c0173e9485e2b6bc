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
import os
from dataclasses import dataclass, field, fields

from common.cli import expand_path, split_argv, suggest
from common.errors import ConfigError  # noqa: F401  (re-exported: the CLIs and tests name it here)
from common.options import bound_text as _bound_text, check as _check_rules, coerce as _coerce, describe_option, like, opt  # noqa: F401
from loaders.spec import DataSpec, LoaderSpec, SamplerSpec  # the data options' declarations (no torch)


# ----------------------------------------------------------------------------- sections
# Traits read from the fields (common/options.py): safe_on_resume (engine/options/resume_options.py
# applies the option to a resumed run), compared=False (engine/options/cv_record.py does not compare it
# across a cross-validation's reruns).

@dataclass
class DataConfig:
    """The data options; those the data layer takes are declared in its specs (loaders/spec.py)."""
    path: str = like(DataSpec, "path")
    loader: str = opt("auto", choices=("auto", "plain", "tensor", "dali", "ffcv", "nvjpeg", "baseline"),
                      safe_on_resume=True, help="the input pipeline; auto picks by what is installed and the device")
    image_size: int = like(LoaderSpec, "image_size")
    batch_size: int = like(SamplerSpec, "batch_size")
    eval_batch_size: int = opt(0, ge=0, safe_on_resume=True, help="images per evaluation batch; 0 = batch_size")
    workers: int = like(DataSpec, "workers", safe_on_resume=True, compared=False)
    val_fraction: float = like(DataSpec, "val_fraction")
    test_fraction: float = like(DataSpec, "test_fraction")
    crop_scale_min: float = like(LoaderSpec, "crop_scale_min")
    crop_ratio: float = like(LoaderSpec, "crop_ratio")
    hflip: bool = like(LoaderSpec, "hflip")
    vflip: bool = like(LoaderSpec, "vflip")
    rot90: bool = like(LoaderSpec, "rot90")
    color_jitter: float = like(LoaderSpec, "color_jitter")
    eval_crop: float = like(LoaderSpec, "eval_crop")
    clahe: bool = like(LoaderSpec, "clahe")
    color_constancy: str = opt("none", choices=("none", "shades_of_gray"),
                               help="shades-of-gray colour constancy (p = 6) on the device; none = off")
    synthetic_count: int = like(DataSpec, "synthetic_count")
    cache_dir: str = like(DataSpec, "cache_dir")
    max_samples: int = like(DataSpec, "max_samples")
    verify: str = like(DataSpec, "verify")


@dataclass
class SamplerConfig:
    kind: str = like(SamplerSpec, "kind")
    alpha: float = like(SamplerSpec, "alpha")
    replacement: bool = like(SamplerSpec, "replacement")


@dataclass
class ModelConfig:
    name: str = opt("seedcnn", help="the architecture (models/registry.py)")
    pretrained: str = opt("", path=True, help="local weights file, or 'imagenet' (models/pretrained.py); '' = none")
    dropout: float = opt(0.25, ge=0.0, le=0.99, help="dropout before the classifier")
    metadata: str = opt("", help="comma-separated CSV columns fused with the image features; '' = images only")


@dataclass
class OptimConfig:
    name: str = opt("adamw", choices=("adamw", "sgd"), help="the optimizer")
    lr: float = opt(2e-3, gt=0.0, le=10.0, help="peak learning rate")
    weight_decay: float = opt(0.05, ge=0.0, help="decoupled weight decay (adamw) or L2 (sgd)")
    momentum: float = opt(0.9, ge=0.0, lt=1.0, help="sgd momentum; Nesterov is used when > 0")
    label_smoothing: float = opt(0.0, ge=0.0, le=0.99, help="label smoothing of the cross-entropy; 0 = off")
    clip_grad: float = opt(0.0, ge=0.0, help="gradient norm clipping threshold; 0 = off")
    logit_adjust: float = opt(0.0, ge=0.0, le=5.0, help="tau of the logit-adjusted loss (logits + tau*log prior); 0 = off")
    pos_weight: str = opt("prior", choices=("prior", "none"),
                          help="multi-label findings: weight each finding's positives by negatives/positives in "
                               "the training split (sigmoid BCE pos_weight); none = plain BCE")


@dataclass
class ScheduleConfig:
    name: str = opt("cosine", choices=("cosine", "onecycle", "plateau", "constant"), help="learning-rate schedule")
    warmup_epochs: float = opt(1.0, ge=0.0, help="linear warmup length in epochs")
    min_lr_ratio: float = opt(0.01, ge=0.0, le=1.0, help="final learning rate as a fraction of the peak")
    plateau_factor: float = opt(0.5, gt=0.0, lt=1.0, help="plateau: rate multiplier on a plateau (torch's ReduceLROnPlateau)")
    plateau_patience: int = opt(2, ge=0, help="plateau: epochs without improvement before the rate drops")


@dataclass
class TrainConfig:
    epochs: int = opt(10, ge=1, safe_on_resume=True, help="training epochs")
    amp: bool = opt(False, help="mixed precision (autocast)")
    amp_dtype: str = opt("auto", choices=("bf16", "fp16", "auto"),
                         help="autocast dtype; fp16 uses a GradScaler; auto = bf16 only where native")
    compile: bool = opt(False, help="torch.compile the training step")
    cuda_graph: bool = opt(False, help="capture the training step in a CUDA graph")
    device: str = opt("auto", choices=("auto", "cpu", "cuda"), safe_on_resume=True, help="where to train")
    seed: int = opt(0, ge=0, le=2**63 - 1, help="seed of splits, sampling, augmentation and initialization")
    deterministic: bool = opt(False, help="deterministic algorithms only (slower)")
    patience: int = opt(0, ge=0, safe_on_resume=True, help="early stopping on the selection metric, in epochs; 0 = off")
    select: str = opt("balanced_accuracy", choices=("balanced_accuracy", "accuracy", "auc_macro", "f1_macro"),
                      help="validation metric that chooses the kept epoch")
    ema: float = opt(0.0, ge=0.0, le=0.99999, help="EMA decay of the weights; 0 = off")
    mixup: float = opt(0.0, ge=0.0, help="mixup Beta(a, a) parameter; 0 = off")
    cutmix: float = opt(0.0, ge=0.0, help="cutmix Beta(a, a) parameter; 0 = off")
    log_interval: int = opt(50, ge=1, safe_on_resume=True, compared=False,
                            help="steps between reads of the device accumulators")
    max_nonfinite: int = opt(20, ge=1, safe_on_resume=True, help="consecutive non-finite losses before the run stops")
    progress: str = opt("auto", choices=("auto", "on", "off"), safe_on_resume=True, compared=False,
                        help="progress bar; auto = on a terminal only")


@dataclass
class RunConfig:
    preset: str = opt("", help="a named recipe applied before the other options (see presets below)")
    out: str = opt("", path=True, compared=False, help="the run folder; '' = runs/<timestamp>")
    resume: str = opt("", path=True, compared=False, help="continue a run: its folder or its checkpoint.pt")
    tta: bool = opt(False, safe_on_resume=True, help="test-time augmentation in the final evaluation")
    report: bool = opt(True, safe_on_resume=True, compared=False,
                       help="draw report/ (figures, Grad-CAM sample) at the end; false for sweeps and cv folds: "
                            "python -m engine.report RUN draws it later, without the Grad-CAM sample")
    plan: str = opt("auto", choices=("auto", "off"),
                    help="auto: options not given are chosen from the data (engine/plan/plan.py, docs/plan.md)")
    budget: float = opt(0.0, ge=0.0, le=10080.0, help="training minutes the plan sizes epochs for; 0 = the plan's default")


@dataclass
class EvalConfig:
    posthoc_adjust: bool = opt(False, help="choose a class-prior correction tau on validation (engine/score/decisions.py)")
    target_sensitivity: float = opt(0.0, ge=0.0, le=0.999,
                                    help="binary: operating threshold reaching this validation sensitivity; 0 = off")
    finding_threshold: str = opt("youden", choices=("youden", "f1", "half"),
                                 help="multi-label findings: per-finding decision threshold chosen on validation "
                                      "(youden: max sensitivity + specificity; f1: max F1; half: 0.5)")
    calibrate: bool = opt(True, help="fit a temperature on validation after training (engine/score/temperature.py); "
                                     "applied before the prior correction and threshold")


@dataclass
class WandbConfig:
    mode: str = opt("offline", choices=("offline", "online", "disabled"), safe_on_resume=True, compared=False,
                    help="Weights & Biases tracking mode")
    project: str = opt("medtrain", safe_on_resume=True, compared=False, help="Weights & Biases project name")


@dataclass
class DistConfig:
    sync_bn: bool = opt(False, help="DDP: synchronized batch norm across ranks")
    timeout_s: int = opt(120, ge=1, le=86400, safe_on_resume=True, compared=False,
                         help="DDP: seconds before a silent peer counts as lost")
    nccl_error_handling: int = opt(2, ge=0, le=3, safe_on_resume=True,
                                   help="TORCH_NCCL_ASYNC_ERROR_HANDLING under torchrun, whatever "
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
CHECKPOINT_NAME = "checkpoint.pt"  # engine/run/checkpoint.py writes it; --resume accepts it or its folder


def _field_table() -> dict[str, dataclasses.Field]:
    return {f"{s.name}.{f.name}": f for s in fields(Config) for f in fields(s.default_factory)}


FIELDS = _field_table()
# Derived from the fields' own declarations (opt(...) above), for readers and usage().
CHOICES = {k: f.metadata["choices"] for k, f in FIELDS.items() if "choices" in f.metadata}
PATHS = tuple(k for k, f in FIELDS.items() if f.metadata.get("path"))


def all_keys(cfg: Config | None = None) -> list[str]:
    return list(FIELDS)


def _check(key: str, value, meta: dict) -> None:
    """The field's own rules (opt(...)): choices, finite numbers, bounds."""
    _check_rules(key, value, meta, suggest)


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


@dataclass(frozen=True)
class Parsed:
    """A command line read: the Config and the dotted keys the user gave (the plan, engine/plan/plan.py,
    fills in only the others)."""
    config: Config
    explicit: frozenset[str]


def parse_args(argv: list[str], base: Config | None = None) -> Parsed:
    """Read the command line; raises ConfigError with a one-line message on any mistake."""
    cfg = base or Config()
    pairs = [(key, _full_key(key), raw) for key, raw in split_argv(argv)]
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
    return Parsed(cfg, frozenset(full for _, full, _ in pairs))


def config_usage() -> str:
    """Every option grouped by section: default, choices or bounds, and its one-line help."""
    short = {full: flag for flag, full in SHORT_FLAGS.items()}
    lines = ["usage: python -m engine.train [options]", "",
             "Options are --section.key value (or --section.key=value); a flag alone means true.",
             "With --run.plan auto (the default) options not given are chosen from the data; the",
             "defaults below are what --run.plan off uses (docs/plan.md).", ""]
    for section in fields(Config):
        lines.append(f"{section.name}:")
        for f in fields(section.default_factory):
            key = f"{section.name}.{f.name}"
            described = describe_option(key, f)
            if key in short:
                described[0] = described[0].replace(f"--{key}", f"--{key}, --{short[key]}", 1)
            lines += described
        lines.append("")
    lines.append(f"presets (--preset NAME): {', '.join(sorted(PRESETS))}")
    return "\n".join(lines)
