"""Dataset formats, detected from the path: MedMNIST npz, folder + CSV, class-per-folder, synthetic.

`load_dataset(spec, seed)` (a `loaders.spec.DataSpec`) returns a `Dataset` with train/val/test `Split`s. In-memory
datasets (npz, loaders/npz.py) carry uint8 NHWC arrays; file datasets carry absolute paths,
listed by a label CSV (loaders/csv_table.py) or a folder tree (loaders/tree.py), checked once
before training so a bad file is reported (path and reason) and dropped, never decoded into
the wrong label. Labels are normalized before classes exist (loaders/labels.py). A predefined
partition (a split column, split folders) is used as given, a missing val or test part carved
out of train; otherwise the split is stratified and grouped (loaders/splits.py).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from loaders import csv_table, hdf5_store, images, multilabel, splits, synthetic, tree
from loaders import labels as label_rules
from loaders.csv_table import FILE_COLUMNS, GROUP_COLUMNS, LABEL_COLUMNS, Listing  # noqa: F401 (re-exported)
from loaders.file_finder import FileFinder
from loaders.filetypes import IMAGE_EXTENSIONS  # noqa: F401 (re-exported)
from loaders.labels import MISSING_LABELS  # noqa: F401 (re-exported)
from loaders.npz import KNOWN_NPZ_CLASSES, load_npz  # noqa: F401 (re-exported)
from loaders.records import Dataset, Split
from loaders.spec import default_workers

log = logging.getLogger("medtrain.data")

FORMATS = ("a MedMNIST .npz, a class-per-folder tree, a folder with a CSV of file,label[,group][,split], "
           "a folder with an HDF5 image store and its metadata CSV (ISIC 2024), "
           "train/val/test folders of class folders, a CSV file, or 'synthetic'")


# ----------------------------------------------------------------------------- where the labels are

def read_folder_listing(root: Path, csv_file: Path | None = None) -> Listing:
    """The label source of a folder: the CSV given, labels.csv|tsv, the label CSV that goes with the
    images, or the tree."""
    if csv_file is not None:
        store = hdf5_store.store_for_csv(csv_file)
        return csv_table.read_listing(root, csv_file, finder=hdf5_store.KeyFinder(store) if store else None)
    for name in ("labels.csv", "labels.tsv"):
        if (root / name).exists():
            return csv_table.read_listing(root, root / name)
    pair = hdf5_store.pick(root, "train")
    if pair is not None and pair[1] is not None:  # ISIC 2024: train-image.hdf5 + train-metadata.csv
        return csv_table.read_listing(root, pair[1], finder=hdf5_store.KeyFinder(pair[0]))
    finder = FileFinder(root)
    candidates = csv_table.label_csvs(root, finder)
    if len(candidates) > 1:  # e.g. train.csv beside a test listing: the one naming these images is meant
        candidates = _matching_listing(root, candidates, finder)
    if candidates:
        return csv_table.read_listing(root, candidates[0])
    if any(p.is_dir() for p in tree.visible_children(root)):
        return tree.read_tree(root)
    plain_csv = next(iter(csv_table.tables(root)), None)
    if plain_csv is not None:  # a CSV without labels: its own reader says what is missing
        return csv_table.read_listing(root, plain_csv)
    if pair is not None:  # a store alone (another .h5 beside labelled images is left alone above)
        raise ConfigError(f"{root}: HDF5 store {pair[0].name} has no CSV of its ids and labels beside it "
                          f"(expected {hdf5_store.prefix(pair[0])}-metadata.csv); pass one: --data <csv>")
    raise ConfigError(f"{root}: no CSV and no class folders; expected {FORMATS}")


def _matching_listing(root: Path, candidates: list[Path], finder: FileFinder) -> list[Path]:
    """The one label CSV whose file cells name the images here (most of its rows), or one line naming
    them all with the share each matches."""
    shares = {c: csv_table.file_match_share(root, c, finder) for c in candidates}
    best = max(candidates, key=lambda c: shares[c])
    full = [c for c in candidates if shares[c] >= 0.9]
    if len(full) == 1:
        log.warning("%s: several label CSVs (%s); using %s, whose file column names the images here", root,
                    ", ".join(c.name for c in candidates), full[0].name)
        return full
    listed = ", ".join(f"{c.name} ({shares[c]:.0%} of rows name a file here)" for c in candidates)
    raise ConfigError(f"{root}: several CSVs with file and label columns ({listed}); pass the one to train on: "
                      f"--data {best}")


def _classes(root: Path, labels: list[str], listing: Listing) -> list[str]:
    classes = label_rules.sorted_classes(labels)
    clash = label_rules.case_clash(classes)
    if clash:  # "Mel" and "mel" as two classes would split one diagnosis in two
        raise ConfigError(f"{root}: labels {' and '.join(repr(c) for c in clash)} differ only in case; "
                          "use one spelling")
    if len(classes) < 2:
        hint = ""
        only = root / classes[0]
        tables = csv_table.tables(root)
        if tables:  # labels are likelier in a table here than in the folders one level down
            hint = f" ({tables[0].name} is here but was not read as labels; --data {tables[0]} says why)"
        elif listing.parts is None and only.is_dir() and any(p.is_dir() for p in tree.visible_children(only)):
            hint = f" (is the dataset one level down? --data {only})"
        raise ConfigError(f"{root}: only one class ({classes[0]!r}) found; classification needs at least 2{hint}")
    return classes


# ----------------------------------------------------------------------------- partition

def _carve(part: np.ndarray, labels: np.ndarray, groups, name: str, fraction: float, seed: int) -> None:
    """Move `fraction` of all images from train to `name`, stratified and grouped, in place."""
    train = np.flatnonzero(part == "train")
    share = min(fraction * len(part) / max(len(train), 1), 0.9)
    g = groups[train] if groups is not None else None
    _, taken, _ = splits.train_val_test(labels[train], g, share, 0.0, seed)
    part[train[taken]] = name


def _partition(all_split: Split, parts: np.ndarray | None, cfg, seed: int) -> tuple[tuple, str]:
    labels, groups = all_split.labels, all_split.groups
    if parts is None:
        return splits.train_val_test(labels, groups, cfg.val_fraction, cfg.test_fraction, seed), \
            "stratified" + (" and grouped" if groups is not None else "") + f" split (seed {seed})"
    parts = parts.copy()
    notes = ["predefined"]
    for name, fraction in (("test", cfg.test_fraction), ("val", cfg.val_fraction)):
        if not (parts == name).any() and fraction > 0:
            _carve(parts, labels, groups, name, fraction, seed)
            notes.append(f"{name} carved out of train")
            log.warning("the predefined partition has no %s part: %d images carved out of train for it "
                        "(--data.%s_fraction %g)", name, int((parts == name).sum()), name, fraction)
    if groups is not None:
        leaked = [g for g in np.unique(groups) if len(set(parts[groups == g])) > 1]
        if leaked:
            log.warning("%d group(s) have images in two predefined parts (e.g. %r): the partition is used as given",
                        len(leaked), leaked[0])
    return tuple(np.flatnonzero(parts == p) for p in ("train", "val", "test")), ", ".join(notes)


# ----------------------------------------------------------------------------- files

STORE_SAMPLE = 1024  # members of a large HDF5 store header-checked before training (the rest as decoded)


def _verify(files: list[str], cfg) -> tuple[list[int], list[tuple[str, str]], tuple[int, int] | None]:
    """images.scan of every file; for an HDF5 store larger than STORE_SAMPLE under --data.verify header,
    of a fixed sample: one h5py read per key serializes on h5py's lock (~0.1-1 ms each on a loaded
    machine: minutes at 400k keys), while the keys themselves are already known to exist and a
    member that fails to decode later is skipped and listed like any bad file (loaders/base.py)."""
    full, workers = cfg.verify == "full", max(2, default_workers(cfg.workers))
    if full or len(files) <= STORE_SAMPLE or not hdf5_store.is_member(files[0]):
        return images.scan(files, full=full, workers=workers)
    rows = np.sort(np.random.default_rng(0).choice(len(files), STORE_SAMPLE, replace=False))
    _, bad, common = images.scan([files[i] for i in rows], workers=workers)
    log.info("HDF5 store of %d images: headers of a %d-image sample checked (%d bad); the rest are checked "
             "as they are decoded (--data.verify full checks all first)", len(files), STORE_SAMPLE, len(bad))
    dropped = {p for p, _ in bad}
    return [i for i, f in enumerate(files) if f not in dropped], bad, common


def _load_files(root: Path, cfg, seed: int, name: str, csv_file: Path | None = None) -> Dataset:
    listing = read_folder_listing(root, csv_file)
    files, labels, skipped = listing.files, listing.labels, list(listing.skipped)
    if not files and skipped:
        where, reason = skipped[0]
        raise ConfigError(f"{root}: none of the {len(skipped)} entries of {listing.source.split(':')[0]} is usable "
                          f"(e.g. {where}: {reason})")
    if not files:
        raise ConfigError(f"{root}: no usable images found; expected {FORMATS}")
    log.info("labels from %s", listing.source)

    good, bad, first = _verify(files, cfg)
    skipped += bad
    if not good:
        reason = Counter(r for _, r in bad).most_common(1)[0][0]
        example = next(p for p, r in bad if r == reason)
        raise ConfigError(f"{root}: all {len(files)} images are unreadable (e.g. {example}: {reason})")
    files = [files[i] for i in good]
    labels = [labels[i] for i in good]
    groups = np.array([listing.groups[i] for i in good]) if listing.groups is not None else None
    parts = np.array([listing.parts[i] for i in good], dtype=object) if listing.parts is not None else None

    if listing.findings is not None:  # several findings per image (loaders/multilabel.py)
        classes = listing.findings
        if len(classes) < 2:
            raise ConfigError(f"{root}: multi-label findings name only {classes}; classification needs at least 2")
        y = multilabel.matrix(labels, classes)
    else:
        classes = _classes(root, labels, listing)
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[c] for c in labels], np.int64)
    all_split = Split(labels=y, files=files, groups=groups)
    if cfg.max_samples and cfg.max_samples < len(files):
        keep, _, _ = splits.train_val_test(all_split.labels, groups, 0.0, 1.0 - cfg.max_samples / len(files), seed)
        all_split = all_split.subset(keep)
        parts = parts[keep] if parts is not None else None
    (tr, va, te), partition = _partition(all_split, parts, cfg, seed)
    train = all_split.subset(tr)
    for i, c in enumerate(classes):
        if not np.any(_members(train.labels, i)):  # a stated decision: train anyway, but say what it means
            elsewhere = int(np.sum(_members(all_split.labels[va], i)) + np.sum(_members(all_split.labels[te], i)))
            log.warning("class %r has no training sample after the split (%d in val/test): the model cannot "
                        "learn it and its recall will be 0", c, elsewhere)
    h, w = first
    return Dataset(name, str(root), classes, train, all_split.subset(va), all_split.subset(te),
                   native_size=max(h, w), skipped=skipped, partition=partition)


def _members(labels: np.ndarray, i: int) -> np.ndarray:
    """Rows of class i, or with finding i (multi-label)."""
    return labels[:, i] > 0.5 if labels.ndim == 2 else labels == i


# ----------------------------------------------------------------------------- entry

def load_dataset(cfg, seed: int = 0) -> Dataset:
    if cfg.path == "synthetic":
        root = synthetic.ensure_synthetic(cfg.synthetic_count, seed=0, cache_dir=cfg.cache_dir)
        ds = _load_files(root, cfg, seed, "synthetic")
    else:
        path = Path(cfg.path).expanduser()
        if not path.exists():
            raise ConfigError(f"--data {cfg.path}: no such file or folder; expected {FORMATS}")
        if path.is_file() and path.suffix.lower() == ".npz":
            ds = load_npz(path, cfg, seed)
        elif path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
            ds = _load_files(path.parent, cfg, seed, path.parent.name, csv_file=path)
        elif path.is_dir():
            ds = _load_files(path, cfg, seed, path.name)
        else:
            raise ConfigError(f"--data {cfg.path}: unsupported file type; expected {FORMATS}")
    if len(ds.train) == 0:  # tiny or few-group datasets: rounding can deal every group to val/test
        raise ConfigError(f"{ds.source}: the split left no training images ({len(ds.val)} val, {len(ds.test)} test); "
                          "lower --data.val_fraction/--data.test_fraction or add images")
    if ds.skipped:
        log.warning("skipped %d input(s): %s", len(ds.skipped), skip_summary(ds.skipped))
        for path, reason in ds.skipped[:20]:
            log.warning("  skipped %s: %s", path, reason)
        if len(ds.skipped) > 20:
            log.warning("  ... and %d more (all listed in data_skipped.json in the run folder)", len(ds.skipped) - 20)
    return ds


def skip_summary(skipped: list[tuple[str, str]], kinds: int = 5) -> str:
    """'3 truncated JPEG (no end-of-image marker); 1 empty file (0 bytes)': counts per kind of
    reason, the kind being the text before its details in parentheses."""
    groups: dict[str, list[str]] = {}
    for _, reason in skipped:
        groups.setdefault(reason.split(" (")[0], []).append(reason)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    parts = [f"{len(rs)} {rs[0] if len(set(rs)) == 1 else kind}" for kind, rs in ranked[:kinds]]
    if len(ranked) > kinds:
        parts.append(f"{sum(len(rs) for _, rs in ranked[kinds:])} for {len(ranked) - kinds} other reason(s)")
    return "; ".join(parts)


def with_splits(ds: Dataset, train: Split, val: Split, test: Split) -> Dataset:
    # new splits: not the file's own, nor drawn by the fractions asked for (cv folds, a scored subset)
    return replace(ds, train=train, val=val, test=test, official_split=False, partition=f"given splits ({ds.partition})")
