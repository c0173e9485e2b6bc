"""A trained checkpoint back as a scoring run: its model, its data settings, its classes.

The dataset is read with the checkpoint's own data settings (split fractions, seed, subset
size), so `--split test` on the training data is exactly the run's test split; data with other
classes is refused.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from engine.run import checkpoint, cv_fold, distributed
from engine.score import data_scope
from engine.run.build import Run, build_model_for, scoring_run
from engine.options.config import Config, ConfigError
from engine.run.env import pick_device
from engine.options.resolve import data_spec, resolve
from loaders.concat import concat_splits
from loaders.datasets import Dataset, load_dataset, with_splits


@dataclasses.dataclass
class Restored:
    model: nn.Module
    classes: list[str]
    cfg: Config
    image_size: int
    model_name: str
    device: torch.device
    decision: dict | None = None  # prior correction / threshold chosen on validation (engine/score/decisions.py)
    data_source: str = ""  # the absolute data path recorded at training time ("" in older checkpoints)
    data_contents: dict = dataclasses.field(default_factory=dict)  # content digest -> split ({} in older ones)
    data_sha256: str = ""  # an array file's SHA-256 (npz runs)
    source_dir: str = ""   # the run folder it was read from (a cv fold scores its own split: engine/run/cv_fold.py)


def restore(checkpoint_dir: str, device: str = "auto") -> Restored:
    saved = checkpoint.load(checkpoint_dir)
    missing = {"model", "classes", "config", "image_size", "model_name"} - set(saved)
    if missing:
        raise ConfigError(f"{checkpoint_dir}: checkpoint lacks {', '.join(sorted(missing))}; not written by engine.train")
    cfg = Config.from_dict(saved["config"])
    cfg.train.device = device
    cfg.train.cuda_graph = False
    cfg.model.pretrained = ""  # the checkpoint holds the weights
    dev = pick_device(cfg)
    classes = list(saved["classes"])
    # fused model: its metadata width is the embedding's input width
    meta = saved["model"]["embed.0.weight"].shape[1] if cfg.model.metadata else 0
    model = build_model_for(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=saved["model_name"])),
                            len(classes), saved["image_size"], meta)
    model.load_state_dict(saved["model"])
    return Restored(model.to(dev).eval(), classes, cfg, saved["image_size"], saved["model_name"], dev,
                    saved.get("decision"), (saved.get("data_identity") or {}).get("source", ""),
                    saved.get("data_contents") or {}, (saved.get("data_identity") or {}).get("sha256", ""),
                    str(checkpoint_dir))


def load_checked(restored: Restored, data_path: str, split: str, prog: str = "engine.predict"
                 ) -> tuple[Dataset, list[str]]:
    """(dataset whose `test` is the requested rows, split name of each row); refuses other classes.
    Which rows and under which data settings: engine/score/data_scope.py."""
    ds = data_scope.read_unlabelled(restored, data_path, prog)
    if ds is not None:  # new patients: every readable image, no label
        return ds, [data_scope.UNLABELLED] * len(ds.test)
    ds = _fold_split(restored, data_path)
    if ds is None:
        try:
            ds = load_dataset(data_spec(data_scope.labelled_config(restored, data_path, split)),
                              seed=restored.cfg.train.seed)
        except ConfigError:
            ds = data_scope.labels_ignored(restored, data_path, prog)  # predict: labels it cannot read are not needed
            if ds is None:
                raise
            return ds, [data_scope.UNLABELLED] * len(ds.test)
    if ds.classes != restored.classes and prog == "engine.predict" and not restored.cfg.model.metadata:
        ds = data_scope.labels_ignored(restored, data_path, prog, f"its labels {ds.classes} are not the checkpoint's")
        return ds, [data_scope.UNLABELLED] * len(ds.test)
    if restored.cfg.model.metadata:  # same columns, encoded as in training (fit on the train split)
        from loaders.tabular import attach_metadata
        ds, _ = attach_metadata(ds, restored.cfg.model.metadata)
    if ds.classes != restored.classes:
        raise ConfigError(f"--data {data_path}: classes {ds.classes} do not match the checkpoint's "
                          f"{restored.classes}; evaluate only on data with the same classes in the same order")
    names = ("train", "val", "test") if split == "all" else (split,)
    rows = concat_splits([ds.split(n) for n in names])
    # Other data read whole has no split of its own unless it defines one (an npz's val/test)
    undivided = split == "all" and not len(ds.val) and not len(ds.test)
    row_split = ["all" if undivided else n for n in names for _ in range(len(ds.split(n)))]
    if not cv_fold.fold_of(restored.source_dir):  # a fold's rows are already named by its own split
        row_split = data_scope.run_split_names(restored, data_path, rows.files, row_split)
    return with_splits(ds, ds.train, ds.val, rows), row_split


def _fold_split(restored: Restored, data_path: str) -> Dataset | None:
    """A cv fold on the data it was trained on: that fold's own train/val/test (engine/run/cv_fold.py)."""
    if not data_scope.is_own_data(restored, data_path):
        return None
    cfg = dataclasses.replace(restored.cfg, data=dataclasses.replace(restored.cfg.data, path=data_path))
    return cv_fold.fold_dataset(restored.source_dir, cfg)


def checkpoint_run(restored: Restored, ds: Dataset, batch_size: int = 0, loader: str = "auto",
                   amp: bool = False) -> Run:
    """A Run that scores `ds.test` with the restored model: no trainer, one evaluation loader."""
    cfg = Config.from_dict(restored.cfg.to_dict())
    cfg.data.image_size = restored.image_size
    cfg.train.amp = amp  # bf16 autocast while scoring
    if batch_size:
        cfg.data.eval_batch_size = batch_size
    return scoring_run(resolve(cfg, ds), ds, loader, restored.model, restored.device, restored.decision)
