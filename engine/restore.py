"""A trained checkpoint back as a scoring run: its model, its data settings, its classes.

The dataset is read with the checkpoint's own data settings (split fractions, seed, subset
size), so `--split test` on the training data is exactly the run's test split; data with other
classes is refused.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from engine import checkpoint, data_scope
from engine.build import Run, build_model_for, scoring_run
from engine.config import Config, ConfigError
from engine.env import pick_device
from engine.resolve import data_spec, resolve
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
    decision: dict | None = None  # prior correction / threshold chosen on validation (engine/decisions.py)
    data_source: str = ""  # the absolute data path recorded at training time ("" in older checkpoints)


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
                    saved.get("decision"), (saved.get("data_identity") or {}).get("source", ""))


def load_checked(restored: Restored, data_path: str, split: str, prog: str = "engine.predict"
                 ) -> tuple[Dataset, list[str]]:
    """(dataset whose `test` is the requested rows, split name of each row); refuses other classes.
    Which rows and under which data settings: engine/data_scope.py."""
    ds = data_scope.read_unlabelled(restored, data_path, prog)
    if ds is not None:  # new patients: every readable image, no label
        return ds, [data_scope.UNLABELLED] * len(ds.test)
    ds = load_dataset(data_spec(data_scope.labelled_config(restored, data_path, split)), seed=restored.cfg.train.seed)
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
    row_split = data_scope.run_split_names(restored, data_path, rows.files, row_split)
    return with_splits(ds, ds.train, ds.val, rows), row_split


def checkpoint_run(restored: Restored, ds: Dataset, batch_size: int = 0, loader: str = "auto",
                   amp: bool = False) -> Run:
    """A Run that scores `ds.test` with the restored model: no trainer, one evaluation loader."""
    cfg = Config.from_dict(restored.cfg.to_dict())
    cfg.data.image_size = restored.image_size
    cfg.train.amp = amp  # bf16 autocast while scoring
    if batch_size:
        cfg.data.eval_batch_size = batch_size
    return scoring_run(resolve(cfg, ds), ds, loader, restored.model, restored.device, restored.decision)
