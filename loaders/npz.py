"""MedMNIST-style `.npz`: uint8 images and integer labels, with or without official splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import ConfigError
from loaders import multilabel, splits
from loaders.records import Dataset, Split

# MedMNIST npz files carry no class names; the ones we know are named here.
KNOWN_NPZ_CLASSES = {"derma": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]}


def load_npz(path: Path, cfg, seed: int) -> Dataset:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # empty, truncated, not a zip, pickled: numpy raises many types
        raise ConfigError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc}); expected MedMNIST keys train_images, train_labels, ...") from None
    keys = set(data.files)
    needed = {"train_images", "train_labels"}
    if not needed <= keys:
        raise ConfigError(f"{path}: missing keys {sorted(needed - keys)}; expected MedMNIST keys "
                          "train_images/train_labels[/val_*/test_*]")
    split_keys = ("test_images", "test_labels", "val_images", "val_labels")
    official = [k for k in split_keys if k in keys]
    if official and len(official) < 4:  # half an official split: refuse rather than guess which half to trust
        absent = [k for k in split_keys if k not in keys]
        raise ConfigError(f"{path}: has {'/'.join(sorted(official))} but not {'/'.join(absent)}; give both val "
                          "and test splits or neither (then they are carved out of train)")

    def read(key):
        try:
            return data[key]
        except Exception as exc:  # object arrays (would need unpickling), CRC errors, truncated members
            raise ConfigError(f"{path}: {key} could not be read ({type(exc).__name__}: {exc})") from None

    def take(prefix):
        x, y = read(f"{prefix}_images"), read(f"{prefix}_labels")
        if x.dtype != np.uint8:
            raise ConfigError(f"{path}: {prefix}_images has dtype {x.dtype}; expected uint8")
        if x.ndim == 3:  # grayscale (N,H,W): repeat to RGB so every model takes 3 channels
            x = np.repeat(x[..., None], 3, axis=-1)
        if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.shape[1] != x.shape[2]:
            raise ConfigError(f"{path}: {prefix}_images has shape {x.shape}; expected (N,H,W) or (N,H,W,3) square")
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        if len(x) == 0:
            raise ConfigError(f"{path}: {prefix}_images holds no images")
        shape = y.shape
        y = np.asarray(y).reshape(len(y), -1) if y.ndim else y
        if y.ndim == 2 and y.shape[1] > 1:  # N x K: multi-label findings (ChestMNIST: N x 14)
            return np.ascontiguousarray(x), multilabel.npz_labels(path, prefix, y, len(x))
        if y.ndim != 2 or y.shape[1] != 1 or len(y) != len(x):
            raise ConfigError(f"{path}: {prefix}_labels has shape {shape}; "
                              f"expected ({len(x)},) or ({len(x)},1) single-label, or ({len(x)},K) 0/1 findings")
        if y.dtype.kind not in "iuf" and y.dtype != np.bool_:
            raise ConfigError(f"{path}: {prefix}_labels has dtype {y.dtype}; expected integers")
        if y.dtype.kind == "f":  # 1.0 is a label; 0.5 is a probability or a corrupt file, never a class
            odd = y[~np.isfinite(y) | (y != np.round(y))]
            if len(odd):
                raise ConfigError(f"{path}: {prefix}_labels holds non-integer values (e.g. {odd[0]}); "
                                  "expected class indices 0..C-1")
        return np.ascontiguousarray(x), y[:, 0].astype(np.int64)

    train_x, train_y = take("train")
    parts = {"train": (train_x, train_y)}
    if {"val_images", "val_labels", "test_images", "test_labels"} <= keys:
        parts["val"], parts["test"] = take("val"), take("test")
    else:  # no official split: carve one out of train
        tr, va, te = splits.train_val_test(train_y, None, cfg.val_fraction, cfg.test_fraction, seed)
        parts = {"train": (train_x[tr], train_y[tr]), "val": (train_x[va], train_y[va]), "test": (train_x[te], train_y[te])}
    if any(y.ndim == 2 for _, y in parts.values()):
        return _multilabel_npz(path, parts, official="val_images" in keys)
    all_y = np.concatenate([y for _, y in parts.values()])
    if all_y.min() < 0:
        raise ConfigError(f"{path}: negative labels found; expected 0..C-1")
    n_classes = int(all_y.max()) + 1
    known = next(((key, names) for key, names in KNOWN_NPZ_CLASSES.items() if key in path.name.lower()), None)
    if known and n_classes > len(known[1]):
        raise ConfigError(f"{path}: label {n_classes - 1} out of range; {known[0].capitalize()}MNIST has "
                          f"{len(known[1])} classes (0..{len(known[1]) - 1})")
    counts = np.bincount(all_y, minlength=n_classes)
    if not known and (counts == 0).any():  # a gap means a corrupt or re-coded label, not an empty class
        empty = np.flatnonzero(counts == 0)
        raise ConfigError(f"{path}: labels skip {len(empty)} of 0..{n_classes - 1} (e.g. {empty[0]}); "
                          "expected every class 0..C-1 to have at least one image")
    if (counts > 0).sum() < 2:
        raise ConfigError(f"{path}: only one class ({int(all_y[0])}) found; classification needs at least 2")
    classes = known[1] if known else [str(i) for i in range(n_classes)]
    made = {k: Split(labels=y, images=x) for k, (x, y) in parts.items()}
    return Dataset(path.stem, str(path), classes, made["train"], made["val"], made["test"],
                   native_size=int(train_x.shape[1]), official_split="val_images" in keys)


def _multilabel_npz(path: Path, parts: dict, official: bool) -> Dataset:
    """N x K findings in every part (loaders/multilabel.py); names for the npz files we know."""
    widths = {k: (y.shape[1] if y.ndim == 2 else 1) for k, (_, y) in parts.items()}
    if len(set(widths.values())) > 1:
        raise ConfigError(f"{path}: label widths differ between parts ({', '.join(f'{k} {w}' for k, w in widths.items())}); "
                          "expected the same N x K findings in train, val and test")
    k = widths["train"]
    classes = multilabel.npz_names(path, k)
    made = {name: Split(labels=y, images=x) for name, (x, y) in parts.items()}
    return Dataset(path.stem, str(path), classes, made["train"], made["val"], made["test"],
                   native_size=int(parts["train"][0].shape[1]), official_split=official)
