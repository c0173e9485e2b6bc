"""The golden run's inputs, read in-process without training it: what no CPU can change.

`pins(data, out, extra)` builds the golden run (the dermamnist preset, deterministic, 3 epochs;
`extra` options appended, as a user would) and returns, as exact values and SHA-256 digests:
the split (labels and pixels of each part, in order), the sampler's order and class histogram
per epoch, the augmentation parameters drawn for the first steps, and the learning-rate table.
None of these passes through a float reduction whose order an instruction set picks (integer
draws, a float64 CDF looked up by uniform draws, a crop box from sqrt of an exact area, a
schedule computed element-wise), so tests compare them with ==.

`short_losses(...)` trains the first few steps and returns their losses: floats, compared at the
tolerance measured across instruction sets (test_engine_golden.py).

`python -m tests.engine.golden_probe DATA OUT [options...]` prints both as one JSON line: how
the suite checks them under an emulated narrower CPU (environment variables are read at torch
import, so that check runs in a subprocess).
"""
from __future__ import annotations

from common.startup import start

start()  # `python -m tests.engine.golden_probe` is an entry point: the start-up users get

import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch

GOLDEN_ARGS = ["--preset", "dermamnist", "--train.deterministic", "true", "--epochs", "3", "--train.progress", "off",
               "--wandb", "disabled", "--device", "cpu"]
AUGMENT_STEPS = 3   # steps of epoch 0 whose augmentation parameters are pinned
LOSS_STEPS = 12     # steps trained by short_losses


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def build_golden(data: Path, out: Path, extra=(), model: bool = True):
    from engine.run.build import build
    from engine.options.config import parse_args
    cfg = parse_args([*GOLDEN_ARGS, "--data", str(data), "--out", str(out), *extra]).config
    return build(cfg, out=str(out), model=model)


def _augment_params(loader, steps: int) -> list[torch.Tensor]:
    """The parameters the loader's own augmentation draws for its first steps (its impl replaced
    by a recorder, so the seeding and drawing code is the run's)."""
    seen = []
    aug = loader.augment
    real_impl = aug.impl
    aug.impl = lambda images, params, spec: seen.append(params.clone()) or images
    try:
        loader.set_epoch(0)
        blank = torch.zeros(loader.batch_size, 3, 2, 2, dtype=torch.uint8)
        for step in range(steps):
            aug(blank, loader.key(step))
    finally:
        aug.impl = real_impl
    return seen


def pins(run) -> dict:
    ds, loader, cfg = run.dataset, run.loaders["train"], run.cfg
    out = {"split": {part: _digest(ds.split(part).labels, ds.split(part).images) for part in ("train", "val", "test")},
           "split_counts": {part: np.bincount(ds.split(part).labels, minlength=ds.num_classes).tolist()
                            for part in ("train", "val", "test")},
           "steps_per_epoch": loader.steps, "order": [], "histograms": []}
    for epoch in range(cfg.train.epochs):
        loader.set_epoch(epoch)
        order, real = loader.epoch_order()
        out["order"].append(_digest(order[:real]))
        out["histograms"].append(torch.bincount(loader.labels[order[:real]], minlength=ds.num_classes).tolist())
    out["augment"] = _digest(*_augment_params(loader, AUGMENT_STEPS))
    if run.trainer is not None:
        table = run.trainer.lr_table
        out["lr_table"] = _digest(table)
        out["lr_epoch_end"] = [float(table[(e + 1) * loader.steps - 1]) for e in range(cfg.train.epochs)]
    return out


def short_losses(run, steps: int = LOSS_STEPS) -> list[float]:
    """The training loss of each of the first `steps` steps of epoch 0."""
    loader, trainer = run.loaders["train"], run.trainer
    loader.set_epoch(0)
    losses = []
    for step, (images, labels, *meta) in enumerate(loader):
        if step == steps:
            break
        trainer.reset_accumulators()
        trainer.train_step(images, labels, *meta)
        losses.append(trainer.read_accumulators()["loss"])
    return losses


def main(argv: list[str]) -> int:
    data, out, extra = Path(argv[0]), Path(argv[1]), argv[2:]
    run = build_golden(data, out, extra)
    print(json.dumps({"pins": pins(run), "losses": short_losses(run)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
