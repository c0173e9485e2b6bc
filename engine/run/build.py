"""Where runs, models and trainers are assembled (tests/common/test_architecture.py keeps it so).

- `build(cfg) -> Run`: a fresh run for engine.train, engine.cv and the benchmark CLIs; the
  sequence (device and process group, seed, output folder, dataset, loaders, model, trainer
  with DDP when launched by torchrun) is written here once.
- `scoring_run(...)`: a Run around a restored checkpoint's model, no trainer (engine/run/restore.py
  restores the checkpoint; engine.evaluate and engine.predict score with it).
- `trainer_alone(...)` and `bare_model(...)`: the step without data, for bench/step.py and
  the plan's calibration (engine/plan/calibrate.py).

`fit(run)` (engine/run/runner.py) trains a built run and `scores(run, split)`
(engine/score/evaluation.py) scores one of its splits.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.run import cuda_math, distributed, multilabel
from engine.score import decisions
from common import run_lock
from engine.options.config import Config, ConfigError
from engine.run.env import seed_everything
from engine.run.loop import Trainer, autocast_dtype
from engine.run.memory import warn_if_batch_will_not_fit
from engine.options.resolve import Resolved, data_spec, resolve
from engine.output.writer import RunWriter
from loaders import base as loaders
from loaders.datasets import Dataset, load_dataset

log = logging.getLogger("medtrain.train")
SPLITS = ("train", "val", "test")


@dataclass
class Run:
    cfg: Config                       # resolved: image size and output folder concrete
    resolved: Resolved
    dataset: Dataset
    loader_name: str
    loader_reason: str
    loaders: dict[str, loaders.Loader]
    model: nn.Module | None           # the bare module (DDP, when on, lives inside the trainer)
    trainer: Trainer | None
    device: torch.device
    context: distributed.Context
    writer: RunWriter = field(default_factory=lambda: RunWriter(None, False))
    decision: dict | None = None      # prior correction / threshold fitted after training (engine/score/decisions.py)

    @property
    def out(self) -> Path | None:
        return self.writer.out


def build(cfg: Config, dataset: Dataset | None = None, *, out: str | None = None, splits: tuple[str, ...] = SPLITS,
          model: bool = True, out_dtype: torch.dtype | None = None, plan: frozenset[str] | None = None) -> Run:
    """Assemble a run. `dataset`: given splits (engine.cv's folds) instead of reading `--data`;
    `out`: the run folder (made, the same on every rank); `model=False`: data only (bench.loaders);
    `out_dtype`: what the loaders write, by default the run's autocast dtype under AMP (half the
    bytes, no cast in the model), else float32; `plan`: the options the user gave
    (engine.options.config.Parsed.explicit), the others are chosen from the data (engine/plan/plan.py) before
    the config is resolved (engine.train and engine.cv; None: benchmarks measure what they are told)."""
    ctx, device = distributed.setup(cfg)  # torchrun: join the group, one device per rank
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    cuda_math.configure(device, cfg.train.deterministic)  # TF32 matmuls, cuDNN autotuning
    out_dir = None
    if out is not None:
        out_dir = Path(distributed.from_rank0(out))  # one folder, even for a timestamped default
        out_dir.mkdir(parents=True, exist_ok=True)
        if ctx.is_main:  # a second run on this folder is refused here, before it reads data or writes
            run_lock.acquire(out_dir)
        ctx.run_dir = str(out_dir)
    ds = dataset if dataset is not None else load_dataset(data_spec(cfg), seed=cfg.train.seed)
    if cfg.model.metadata:  # tabular columns joined on the image id; loaders then yield meta too
        from loaders.tabular import attach_metadata
        ds, meta_names = attach_metadata(ds, cfg.model.metadata)
        log.info("metadata fusion: %d features from %s", len(meta_names), cfg.model.metadata)
    name, why = loaders.choose_backend(cfg.data.loader, ds, device)
    log.info("dataset %s: %d %s, train/val/test %d/%d/%d, native %dpx; loader %s (%s)", ds.name, ds.num_classes,
             "findings (multi-label)" if ds.multilabel else "classes", len(ds.train), len(ds.val), len(ds.test), ds.native_size, name, why)
    if plan is not None and out_dir is not None:  # a new Config: the parsed one is never changed
        from engine.plan.plan import planned
        cfg = planned(cfg, plan, ds, device, out_dir, loader=name)
    out_dtype = out_dtype or autocast_dtype(cfg, device) or torch.float32  # after the plan: it may set --amp
    res = resolve(cfg, ds, ctx.world_size, out=str(out_dir) if out_dir else "")
    built = {}
    for split in splits:
        train = split == "train"
        sampler = loaders.make_sampler(ds, res.sampler, device, ctx.rank, ctx.world_size) if train else None
        built[split] = loaders.build_loader(name, ds, split, res.loader, device, train=train, sampler=sampler,
                                     out_dtype=out_dtype)
    net, trainer = (_model_and_trainer(res, ds, device, built) if model else (None, None))
    return Run(cfg=res.cfg, resolved=res, dataset=ds, loader_name=name, loader_reason=why, loaders=built, model=net,
               trainer=trainer, device=device, context=ctx, writer=RunWriter(out_dir, ctx.is_main))


def scoring_run(res: Resolved, ds: Dataset, loader: str, model: nn.Module, device: torch.device,
                decision: dict | None) -> Run:
    """A Run that scores `ds.test` with a restored model: no trainer, one evaluation loader."""
    name, why = loaders.choose_backend(loader, ds, device)
    test = loaders.build_loader(name, ds, "test", res.loader, device, train=False)
    return Run(cfg=res.cfg, resolved=res, dataset=ds, loader_name=name, loader_reason=why, loaders={"test": test},
               model=model, trainer=None, device=device, context=distributed.Context(device=device),
               writer=RunWriter(None, True), decision=decision)


def bare_model(name: str, num_classes: int, image_size: int) -> nn.Module:
    """The named architecture with its defaults (no dropout, no weights): the plan's calibration."""
    from models.registry import build_model
    return build_model(name, num_classes, image_size)


def trainer_alone(cfg: Config, num_classes: int, image_size: int, device: torch.device, steps_per_epoch: int) -> Trainer:
    """The configured model and its Trainer without data or a run folder (bench/step.py)."""
    net = build_model_for(cfg, num_classes, image_size).to(device)
    return Trainer(net, cfg, device, num_classes, steps_per_epoch)


def build_model_for(cfg: Config, num_classes: int, image_size: int, meta_features: int = 0) -> nn.Module:
    """The configured model, fused with tabular metadata when `meta_features`."""
    from models.registry import build_model
    net = build_model(cfg.model.name, num_classes, image_size, dropout=cfg.model.dropout,
                      pretrained=cfg.model.pretrained)
    if meta_features:
        from models.metadata import fuse
        net = fuse(net, meta_features, num_classes, dropout=cfg.model.dropout)
    return net


def _model_and_trainer(res: Resolved, ds: Dataset, device: torch.device, built: dict):
    cfg = res.cfg
    meta = ds.train.meta.shape[1] if cfg.model.metadata else 0
    net = build_model_for(cfg, ds.num_classes, res.image_size, meta).to(device)
    if "train" in built:  # before SyncBatchNorm, whose forward would be a collective
        _warn_if_batch_will_not_fit(net, res, device, meta)
    net = distributed.convert_sync_bn(net, cfg.dist.sync_bn)
    steps = built["train"].steps if "train" in built else 1
    _refuse_single_label_rules(cfg, ds)
    if ds.multilabel:  # findings: per-finding sigmoid BCE, positives weighted by the training prior
        offset, weight = None, multilabel.pos_weight(cfg, ds.train.labels, device)
    else:
        offset, weight = decisions.loss_offset(cfg, decisions.train_counts(ds), device), None  # None unless --optim.logit_adjust
    trainer = Trainer(net, cfg, device, ds.num_classes, steps, parallel=distributed.replicas(device),
                      logit_offset=offset, pos_weight=weight, multilabel=ds.multilabel)
    if cfg.train.amp and trainer.amp_dtype is None:
        log.warning("--amp: bf16 is emulated on this CPU (no AVX512-BF16/AMX) and ~10x slower than fp32, "
                    "so this run trains in fp32; --train.amp_dtype bf16 forces it")
    return net, trainer


def _refuse_single_label_rules(cfg: Config, ds: Dataset) -> None:
    """Options that shape one softmax over classes have no meaning for findings: refused, never ignored."""
    given = [name for name, on in (("--optim.logit_adjust", cfg.optim.logit_adjust > 0),
                                   ("--eval.target_sensitivity", cfg.eval.target_sensitivity > 0),
                                   ("--eval.posthoc_adjust", cfg.eval.posthoc_adjust)) if on]
    if ds.multilabel and given:
        raise ConfigError(f"{' and '.join(given)}: for single-label classes; {ds.source} holds multi-label findings "
                          "(a sigmoid per finding: --optim.pos_weight, --eval.finding_threshold); drop it")


def _warn_if_batch_will_not_fit(net: nn.Module, res: Resolved, device: torch.device, meta: int) -> None:
    """Tell the user up front when the model's activations for one training batch exceed the
    memory there is (engine/run/memory.py): measured with a 2-sample fp32 forward pass and scaled
    (autocast halves the true figure, so with --amp the warning errs on the safe side)."""
    size = res.image_size
    example = torch.zeros(2, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    extra = (torch.zeros(2, meta, device=device),) if meta else ()
    warn_if_batch_will_not_fit(net, example, res.train_batch, device, *extra)
