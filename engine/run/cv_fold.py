"""A checkpoint inside an engine.cv folder: which fold it is, and that fold's own data split.

engine.cv writes `OUT/cv_options.json` (engine/options/cv_record.py) and one run folder `OUT/fold<i>`
per fold, trained on `engine.cv.fold_datasets(...)[i]`. Scoring a fold checkpoint on the data
it was trained on must use that fold's train/val/test, not the default split the data's own
settings would draw (most of whose test images the fold trained on), so the fold's split is
re-dealt here from the recorded options: the same pool, folds, seed and val fraction.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from common.errors import ConfigError
from engine.options import cv_record
from engine.options.resolve import data_spec
from loaders.datasets import Dataset, load_dataset

FOLD_NAME = re.compile(r"fold(\d+)$")


def recorded_options(root: Path) -> dict | None:
    """The options an engine.cv folder was trained with; None when `root` is not one."""
    path = Path(root) / cv_record.NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["options"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{path}: unreadable engine.cv record; re-run engine.cv into another --out") from None


def fold_of(checkpoint_dir: str | Path) -> tuple[int, int, dict] | None:
    """(fold index, folds, recorded options) for `OUT/fold<i>` of an engine.cv folder, else None."""
    path = Path(checkpoint_dir)
    match = FOLD_NAME.match(path.name)
    options = recorded_options(path.parent) if match else None
    if options is None:
        return None
    return int(match.group(1)), int(options["folds"]), options


def fold_dataset(checkpoint_dir: str | Path, cfg) -> Dataset | None:
    """The fold's own train/val/test when `cfg` (the checkpoint's, with --data) reads the data
    the cv was trained on; None for other checkpoints or data."""
    fold = fold_of(checkpoint_dir)
    if fold is None:
        return None
    i, k, options = fold
    from engine.cv import fold_datasets  # cv imports the training stack: only when a fold is scored
    ds = load_dataset(data_spec(cfg), seed=options["train.seed"])
    return fold_datasets(ds, k, options["data.val_fraction"], options["train.seed"])[i]
