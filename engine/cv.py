"""`python -m engine.cv --folds K [train options]`: K-fold cross-validation.

All images (the dataset's train, val and test together) are dealt into K folds, stratified
by class and grouped by lesion/patient when the data has a group column (loaders/splits.py
`k_folds`): no lesion is ever in two folds. Fold i tests on fold i and trains on the rest,
holding out a grouped, stratified `--data.val_fraction` of it for model selection. Each
fold is a normal run folder `OUT/fold<i>`; `OUT/cv_summary.json` and `cv_summary.md` give
the mean and standard deviation (sample, ddof=1) of every numeric metric across folds.
Re-running the same command skips folds that already finished; `OUT/cv_options.json` records
the options and data they were trained with, and a rerun with others is refused.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from engine.options import cv_record
from common import run_lock
from common.atomic import atomic_write_bytes, atomic_write_json
from common.cli import exit_process, run_main
from common.options import opt, take, usage as options_usage
from engine.options.config import Config, ConfigError, config_usage, parse_args
from engine.run.env import setup_logging
from engine.options.resolve import data_spec
from engine.run.startup import prepare as prepare_process
from loaders import splits
from loaders.concat import concat_splits
from loaders.datasets import Dataset, load_dataset, with_splits

log = logging.getLogger("medtrain.cv")
HEADLINE = ("test.balanced_accuracy", "test.auc_macro", "test.accuracy", "test.f1_macro", "test.ece",
            "val.balanced_accuracy", "epochs", "wall_seconds")


@dataclass
class CvOptions:
    folds: int = opt(0, ge=2, required=True, help="number of folds K (K >= 2); every other option is a train option")


def fold_datasets(ds: Dataset, k: int, val_fraction: float, seed: int) -> list[Dataset]:
    """K datasets: fold i as test, a grouped stratified val carved from the other folds, the rest train."""
    pool = concat_splits([ds.train, ds.val, ds.test])
    folds = splits.k_folds(pool.labels, pool.groups, k, seed)
    out = []
    for i, test_idx in enumerate(folds):
        rest_idx = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != i]))
        rest = pool.subset(rest_idx)
        tr, va, _ = splits.train_val_test(rest.labels, rest.groups, val_fraction, 0.0, seed + 1 + i)
        out.append(with_splits(ds, rest.subset(tr), rest.subset(va), pool.subset(test_idx)))
    return out


def summarize_folds(per_fold: list[dict]) -> dict:
    keys = sorted({k for m in per_fold for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    summary = {}
    for key in keys:
        values = np.array([m[key] for m in per_fold if isinstance(m.get(key), (int, float))], np.float64)
        summary[key] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                        "values": values.tolist()}
    return summary


def _fold_setups(root: Path, k: int) -> str:
    """What the folds trained, from their own config.json: each fold is planned from its own
    data, so the command line's model and size are not necessarily what ran."""
    seen = []
    for i in range(k):
        try:
            c = json.loads((root / f"fold{i}" / "config.json").read_text())
            size = c["data"]["image_size"]
            epochs = c["train"]["epochs"]
            setup = (f"`{c['model']['name']}` at {str(size) + ' px' if size else 'native size'}, "
                     f"{epochs} epoch{'' if epochs == 1 else 's'}")
        except (OSError, ValueError, KeyError):
            setup = "unknown (no config.json)"
        seen.append(setup)
    distinct = sorted(set(seen))
    return distinct[0] if len(distinct) == 1 else "; ".join(f"fold{i}: {s}" for i, s in enumerate(seen))


def _markdown(summary: dict, k: int, cfg: Config, group_note: str, setups: str) -> str:
    lines = [f"# {k}-fold cross-validation", "", f"data `{cfg.data.path}`, {setups}, seed {cfg.train.seed}; folds {group_note}.", "",
             "| metric | mean | std | per fold |", "|---|---|---|---|"]
    for key in [k for k in HEADLINE if k in summary] + [k for k in summary if k.startswith("test.") and k not in HEADLINE]:
        s = summary[key]
        lines.append(f"| {key} | {s['mean']:.4f} | {s['std']:.4f} | " + ", ".join(f"{v:.4f}" for v in s["values"]) + " |")
    return "\n".join(lines) + "\n"


def cross_validate(k: int, cfg: Config, explicit: frozenset[str] | None = None) -> dict:
    """`explicit`: the options the user gave (engine.options.config.Parsed); each fold plans the others."""
    with run_lock.scope():  # one cv per folder at a time; released when it ends
        return _cross_validate(k, cfg, explicit)


def _cross_validate(k: int, cfg: Config, explicit: frozenset[str] | None) -> dict:
    from engine.run.runner import train  # heavy imports only after the arguments are valid
    if cfg.run.resume:
        raise ConfigError("engine.cv: --resume is not a cv option; re-run the same command to finish missing folds")
    root = Path(cfg.run.out or f"runs/cv-{datetime.now():%Y%m%d-%H%M%S}")
    run_lock.acquire(root, "engine.cv")
    ds = load_dataset(data_spec(cfg), seed=cfg.train.seed)
    cv_record.check_or_write(root, k, cfg, ds)  # finished folds are reused only under the same options
    if ds.official_split or ds.partition.startswith("predefined"):
        # Said, not refused: pooling a benchmark's split for CV is a legitimate choice, but the
        # folds' figures are then not comparable with ones on the data's own test split.
        log.warning("%s comes with its own train/val/test partition; engine.cv pools all %d images and "
                    "deals %d new folds (use engine.train to be judged on the data's own test split)",
                    ds.source, len(ds.train) + len(ds.val) + len(ds.test), k)
    group_note = "grouped by " + ("the dataset's lesion/patient column" if ds.train.groups is not None else
                                  "image (no group column)") + ", stratified by class"
    per_fold = []
    for i, fold_ds in enumerate(fold_datasets(ds, k, cfg.data.val_fraction, cfg.train.seed)):
        fold_cfg = Config.from_dict(cfg.to_dict())
        fold_cfg.run.out = str(root / f"fold{i}")
        done = Path(fold_cfg.run.out) / "metrics.json"
        if done.exists():
            log.info("fold %d/%d already finished: %s", i + 1, k, done)
            per_fold.append(json.loads(done.read_text()))
            continue
        log.info("fold %d/%d: train/val/test %d/%d/%d", i + 1, k, len(fold_ds.train), len(fold_ds.val), len(fold_ds.test))
        metrics = train(fold_cfg, dataset=fold_ds, explicit=explicit)  # each fold is planned from its own data
        if metrics is None:
            raise KeyboardInterrupt  # stopped by a signal: the finished folds are kept
        per_fold.append(metrics)
    summary = {"folds": k, "grouping": group_note, "fold_sizes": [int(m.get("test.n", 0)) for m in per_fold],
               "metrics": summarize_folds(per_fold)}
    atomic_write_json(root / "cv_summary.json", summary)
    markdown = _markdown(summary["metrics"], k, cfg, group_note, _fold_setups(root, k)).encode()
    atomic_write_bytes(root / "cv_summary.md", lambda fh: fh.write(markdown))
    for key in ("test.balanced_accuracy", "test.auc_macro", "test.accuracy"):
        s = summary["metrics"].get(key)
        if s:
            print(f"cv {key}: {s['mean']:.4f} ± {s['std']:.4f} over {k} folds")
    print(f"-> {root}/cv_summary.md")
    return summary


def _cv(argv: list[str]) -> None:
    setup_logging()
    own, _, rest = take(argv, CvOptions, "engine.cv")
    parsed = parse_args(rest)
    prepare_process(parsed.config)  # before the first fold touches cuBLAS
    cross_validate(own.folds, parsed.config, parsed.explicit)


def _usage() -> str:
    return options_usage("engine.cv", __doc__.strip().split("\n\n", 1)[1], CvOptions,
                         "train options (as engine.train):\n" + config_usage().split("\n", 2)[2],
                         line="python -m engine.cv --folds K [train options]")


def main(argv: list[str] | None = None) -> int:
    return run_main(_cv, argv, _usage,
                    interrupted="interrupted: finished folds are kept; re-run the same command to continue")


if __name__ == "__main__":
    exit_process(main())  # after a lost peer: ends without tearing down the half-failed group
