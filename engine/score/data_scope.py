"""Which images engine.evaluate and engine.predict score, and under which data settings.

- The run's own data (the folder or npz it was trained on): its own settings, so `--split
  test` is exactly the run's test split; `--split all` reads every image (a `--data.max_samples`
  subset does not drop any: rows outside it are named split `unused`).
- The run's own images under another path (its folder given through its CSV, a byte copy,
  another folder holding some of them): recognised by content (common/data_identity.py
  `contents`); with `--split auto` an image whose content trained or selected the model is not
  scored, with a warning naming how many; an npz with the run's SHA-256 is the run's own data.
- Other labelled data: every image by default (evaluate's default split is `all` there);
  no subset, and no split drawn unless one is asked for with `--split test|val|train`.
- Unlabelled input (loaders/unlabelled.py): every readable image, split `unlabelled`, no
  label; predict only (evaluate needs labels to score).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from common import data_identity
from loaders import unlabelled
from engine.options.resolve import data_spec
from loaders.datasets import load_dataset

log = logging.getLogger("medtrain.data")
UNLABELLED = unlabelled.SPLIT


def _resolved(path: str) -> str:
    return path if path == "synthetic" else str(Path(path).expanduser().resolve())


def is_own_data(restored, data_path: str) -> bool:
    trained_on = {_resolved(restored.cfg.data.path)}
    if restored.data_source:  # the absolute path recorded at training time: right from any folder
        trained_on.add(restored.data_source)
    if _resolved(data_path) in trained_on:
        return True
    path = Path(data_path).expanduser()
    # an array file is one blob: its own SHA-256 says whether it is the run's, wherever it lies
    return bool(restored.data_sha256) and path.is_file() and path.suffix.lower() == ".npz" \
        and data_identity.sha256(path) == restored.data_sha256


def without_seen(restored, ds, row_split: list[str], asked: str, data_path: str):
    """(dataset, row splits) without the rows whose content trained or selected the model, for
    `--split auto` on data that is not the run's own by path; other splits are scored as asked, with a warning."""
    seen = restored.data_contents
    if not seen or ds.test.files is None or is_own_data(restored, data_path):
        return ds, row_split
    digests = [_digest_or_none(f) for f in ds.test.files]
    used = [i for i, d in enumerate(digests) if seen.get(d) in ("train", "val")]
    if not used:
        return ds, row_split
    what = (f"--data {data_path}: {len(used)} of {len(digests)} images have the content of images that trained "
            "or selected this model (its own data under another path?)")
    if asked != "auto":
        log.warning("%s: scored anyway, as --split %s asks; these figures are not a test", what, asked)
        return ds, row_split
    dropped = set(used)
    keep = np.array([i for i in range(len(digests)) if i not in dropped], np.int64)
    if not len(keep):
        raise ConfigError(f"{what}: nothing is left to score; evaluate the run's test split with --data "
                          f"{restored.data_source or restored.cfg.data.path}")
    log.warning("%s: not scored; scoring the %d others", what, len(keep))
    names = [seen.get(digests[i], row_split[i]) for i in keep]  # the run's test images keep their split name
    return dataclasses.replace(ds, test=ds.test.subset(keep)), names


def _digest_or_none(path: str) -> str | None:
    try:
        return data_identity.digest(path)
    except OSError:
        return None


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


def labels_ignored(restored, data_path: str, prog: str, why: str = ""):
    """For engine.predict: the input as a plain list of images when its labels cannot be used (other
    classes, a nested folder that is no class tree, a CSV with another clinic's label columns);
    None for evaluate (figures need our labels) or when no image is found that way."""
    if prog != "engine.predict" or restored.cfg.model.metadata:
        return None
    ds = unlabelled.read(data_path, restored.classes, workers=max(2, restored.cfg.data.workers), ignore_labels=True)
    if ds is None or not len(ds.test):
        return None
    log.warning("--data %s: %slabels not used; predicting every one of its %d readable images", data_path,
                f"{why}: " if why else "", len(ds.test))
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
