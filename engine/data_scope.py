"""Which images engine.evaluate and engine.predict score, and under which data settings.

- The run's own data (the folder or npz it was trained on): its own settings, so `--split
  test` is exactly the run's test split; `--split all` reads every image (a `--data.max_samples`
  subset does not drop any: rows outside it are named split `unused`).
- Other labelled data: every image by default (evaluate's default split is `all` there);
  no subset, and no split drawn unless one is asked for with `--split test|val|train`.
- Unlabelled input (loaders/unlabelled.py): every readable image, split `unlabelled`, no
  label; predict only (evaluate needs labels to score).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from common.errors import ConfigError
from loaders import unlabelled
from engine.resolve import data_spec
from loaders.datasets import load_dataset

log = logging.getLogger("medtrain.data")
UNLABELLED = unlabelled.SPLIT


def _resolved(path: str) -> str:
    return path if path == "synthetic" else str(Path(path).expanduser().resolve())


def is_own_data(restored, data_path: str) -> bool:
    trained_on = {_resolved(restored.cfg.data.path)}
    if restored.data_source:  # the absolute path recorded at training time: right from any folder
        trained_on.add(restored.data_source)
    return _resolved(data_path) in trained_on


def default_split(restored, data_path: str) -> str:
    return "test" if is_own_data(restored, data_path) else "all"


def read_unlabelled(restored, data_path: str, prog: str):
    """The unlabelled input as a dataset, None when labelled; ConfigError when nothing is readable."""
    ds = unlabelled.read(data_path, restored.classes, workers=max(2, restored.cfg.data.workers))
    if ds is None:
        return None
    if prog == "engine.evaluate":
        raise ConfigError(f"--data {data_path}: no labels found (a flat folder of images or a CSV listing files); "
                          "evaluate scores against labels: use engine.predict for unlabelled images")
    if restored.cfg.model.metadata:
        raise ConfigError(f"--data {data_path}: this model also reads {restored.cfg.model.metadata} per image; "
                          "give a folder with a CSV holding those columns and a label column")
    if not len(ds.test):
        example = f" (e.g. {ds.skipped[0][0]}: {ds.skipped[0][1]})" if ds.skipped else ""
        raise ConfigError(f"--data {data_path}: no readable image{example}")
    return ds


def labelled_config(restored, data_path: str, split: str):
    """A new config (the run's, frozen, is not changed): the data settings a labelled input is
    read with (see the module docstring)."""
    data = dataclasses.replace(restored.cfg.data, path=data_path)
    if not is_own_data(restored, data_path) or split == "all":
        data = dataclasses.replace(data, max_samples=0)
    if not is_own_data(restored, data_path) and split == "all":
        data = dataclasses.replace(data, val_fraction=0.0, test_fraction=0.0)  # no split to draw: all is one part
    return dataclasses.replace(restored.cfg, data=data)


def run_split_names(restored, data_path: str, files: list[str] | None, names: list[str]) -> list[str]:
    """Per row, the split the run used it in; `unused` for rows outside a --data.max_samples subset."""
    if not restored.cfg.data.max_samples or files is None or not is_own_data(restored, data_path):
        return names
    run_cfg = dataclasses.replace(restored.cfg, data=dataclasses.replace(restored.cfg.data, path=data_path))
    run_ds = load_dataset(data_spec(run_cfg), seed=restored.cfg.train.seed)
    where = {f: part for part in ("train", "val", "test") for f in run_ds.split(part).files}
    return [where.get(f, "unused") for f in files]
