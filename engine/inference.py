"""What `engine.evaluate` and `engine.predict` share: the checkpoint's model, the dataset
checked against its classes, the evaluation loader, test-time augmentation and the scoring loop.

The run's own data is read with the checkpoint's data settings (split fractions, seed,
subset size), so `--split test` there is exactly the run's test split; other data and
unlabelled inputs are read whole (engine/data_scope.py).
TTA averages the softmax over the 8 symmetries of the square: 4 rotations by 90 degrees,
each with and without a horizontal flip (which together also give the vertical flip).
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine import checkpoint, data_scope, faults, run_lock
from engine.config import Config, ConfigError, _split_argv, _suggest
from engine.env import pick_device, setup_logging
from kernels.confusion import confusion_matrix
from loaders import base as loaders
from loaders import unlabelled
from loaders.datasets import Dataset, Split, load_dataset, with_splits
from models.registry import build_model

SPLITS = ("test", "val", "train", "all", "auto")  # auto: test of the run's own data, else all
PAD_LABEL = -1


# ----------------------------------------------------------------------------- command line

def parse_options(argv: list[str], spec: dict[str, object], required: tuple[str, ...], prog: str) -> dict:
    """`--key value` / `--flag` into a dict typed like `spec`'s defaults; one-line ConfigErrors."""
    options = dict(spec)
    for key, raw in _split_argv(argv):
        name = key.replace("-", "_")
        if name not in spec:
            raise ConfigError(f"{prog}: unknown option --{key}{_suggest(key, [k.replace('_', '-') for k in spec])}")
        kind = type(spec[name])
        if kind is bool:
            if raw not in (None, "true", "false", "1", "0"):
                raise ConfigError(f"{prog}: --{key} is a flag; got {raw!r}")
            options[name] = raw in (None, "true", "1")
        elif raw is None:
            raise ConfigError(f"{prog}: --{key} needs a value")
        else:
            try:
                options[name] = kind(raw)
            except ValueError:
                raise ConfigError(f"{prog}: --{key} expects {kind.__name__}, got {raw!r}") from None
    missing = [f"--{k}" for k in required if not options[k]]
    if missing:
        raise ConfigError(f"{prog}: {' and '.join(missing)} required")
    if "split" in options and options["split"] not in SPLITS:
        raise ConfigError(f"{prog}: --split must be one of {', '.join(SPLITS)}; got {options['split']!r}")
    return options


def cli_main(argv: list[str] | None, doc: str, spec: dict[str, object], required: tuple[str, ...], prog: str,
             action) -> int:
    """The shared `main` of engine.evaluate and engine.predict: usage, options, one error line."""
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print("usage: " + " ".join(doc.strip().split("\n\n")[0].split()).strip("`"))
        return 0
    setup_logging()
    try:
        with run_lock.scope():  # an output folder this command locked is released when it ends
            action(parse_options(argv, spec, required, prog))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # full disk, read-only or missing folder: the machine's fault, one line
        print(f"error: {faults.describe(exc)}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- model and data

@dataclasses.dataclass
class Restored:
    model: nn.Module
    classes: list[str]
    cfg: Config
    image_size: int
    model_name: str
    device: torch.device
    data_source: str = ""  # the absolute data path recorded at training time ("" in older checkpoints)


def restore(checkpoint_dir: str, device: str = "auto") -> Restored:
    saved = checkpoint.load(checkpoint_dir)
    missing = {"model", "classes", "config", "image_size", "model_name"} - set(saved)
    if missing:
        raise ConfigError(f"{checkpoint_dir}: checkpoint lacks {', '.join(sorted(missing))}; not written by engine.train")
    cfg = Config.from_dict(saved["config"])
    cfg.train.device = device
    cfg.train.cuda_graph = False
    dev = pick_device(cfg)
    classes = list(saved["classes"])
    model = build_model(saved["model_name"], len(classes), saved["image_size"], dropout=cfg.model.dropout)
    if cfg.model.metadata:  # fused model: its metadata width is the embedding's input width
        from models.metadata import fuse
        model = fuse(model, saved["model"]["embed.0.weight"].shape[1], len(classes), dropout=cfg.model.dropout)
    model.load_state_dict(saved["model"])
    return Restored(model.to(dev).eval(), classes, cfg, saved["image_size"], saved["model_name"], dev,
                    (saved.get("data_identity") or {}).get("source", ""))


def concat_splits(parts: list[Split]) -> Split:
    def join(attr):
        values = [getattr(p, attr) for p in parts]
        if any(v is None for v in values):
            return None
        return sum(values, []) if attr == "files" else np.concatenate(values)
    return Split(labels=np.concatenate([p.labels for p in parts]), files=join("files"),
                 images=join("images"), groups=join("groups"), meta=join("meta"))


def load_checked(restored: Restored, data_path: str, split: str, prog: str = "engine.predict"
                 ) -> tuple[Dataset, list[str]]:
    """(dataset whose `test` is the requested rows, split name of each row); refuses other classes."""
    ds = data_scope.read_unlabelled(restored, data_path, prog)
    if ds is not None:  # new patients: every readable image, no label
        return ds, [unlabelled.SPLIT] * len(ds.test)
    ds = load_dataset(data_scope.labelled_config(restored, data_path, split), seed=restored.cfg.train.seed)
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


def eval_loader(restored: Restored, ds: Dataset, batch_size: int = 0, loader: str = "auto"):
    cfg = Config.from_dict(restored.cfg.to_dict())
    cfg.data.image_size = restored.image_size
    if batch_size:
        cfg.data.eval_batch_size = batch_size
    name, _ = loaders.resolve(loader, ds, restored.device)
    return loaders.build(name, ds, "test", cfg, restored.device, train=False)


# ----------------------------------------------------------------------------- scoring

def dihedral_views(images: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations/flips of a square NCHW batch, kept channels_last for the model."""
    views = []
    for k in range(4):
        rotated = torch.rot90(images, k, dims=(2, 3))
        views += [rotated, rotated.flip(3)]
    return [v.contiguous(memory_format=torch.channels_last) for v in views]


class TTA(nn.Module):
    """Wraps a classifier: log of the mean softmax over the 8 views, so a softmax of its
    output is exactly the averaged probability and callers need not know TTA is on."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, *meta: torch.Tensor) -> torch.Tensor:
        # meta (metadata fusion) describes the patient, not the pixels: the same for every view
        probs = torch.stack([self.model(v, *meta).float().softmax(1) for v in dihedral_views(images)]).mean(0)
        return probs.clamp_min(1e-12).log()


@torch.no_grad()
def score(model: nn.Module, loader, num_classes: int, amp: bool = False):
    """(confusion, probabilities, labels) of the loader's real rows, in order, on the device."""
    device = loader.device
    model.eval()
    total = loader.steps * loader.batch_size
    probs = torch.empty(total, num_classes, device=device)
    labels_all = torch.empty(total, dtype=torch.int64, device=device)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    offset = 0
    for images, labels, *meta in loader:  # meta only for metadata fusion
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            p = model(images, *meta).float().softmax(1)
        n = len(labels)
        probs[offset:offset + n] = p
        labels_all[offset:offset + n] = labels
        confusion_matrix(labels, p.argmax(1), num_classes, out=cm)
        offset += n
    keep = labels_all[:offset] != PAD_LABEL  # data-dependent shape: after the loop, once
    return cm, probs[:offset][keep], labels_all[:offset][keep]


def run(options: dict, prog: str = "engine.predict") -> tuple[Restored, Dataset, list[str], object, tuple, float]:
    """Everything both CLIs do: restore, load, check, score (with TTA when asked)."""
    restored = restore(options["checkpoint"], options["device"])
    if options["split"] == "auto":
        options["split"] = data_scope.default_split(restored, options["data"])
    ds, row_split = load_checked(restored, options["data"], options["split"], prog)
    loader = eval_loader(restored, ds, options["batch_size"], options["loader"])
    model = TTA(restored.model) if options["tta"] else restored.model
    t0 = time.perf_counter()
    cm, probs, labels = score(model, loader, len(restored.classes), options["amp"])
    seconds = time.perf_counter() - t0
    if len(labels) != len(row_split):  # the loader dropped undecodable files: keep rows aligned
        row_split = [row_split[i] for i in _kept_rows(ds.test, loader.split)]
    return restored, ds, row_split, loader, (cm, probs, labels), seconds


def _kept_rows(requested: Split, kept: Split) -> list[int]:
    position = {f: i for i, f in enumerate(requested.files)}
    return [position[f] for f in kept.files]


def relative_name(path: str, root: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return path
