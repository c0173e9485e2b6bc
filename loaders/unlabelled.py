"""Inputs without labels, as new patients come: one image, a flat folder of images, or a CSV
(or a folder with a CSV) whose only use is to list files.

`read(path, classes)` returns a `Dataset` whose test split holds every readable image in
input order (labels 0: unused), with everything else listed in `skipped` with its reason
(unreadable, missing, not an image type, duplicate); or None when the input is labelled
(a class tree, a CSV with a label column or one column per class, an npz), which the
labelled readers in loaders/datasets.py then take. No training option (subset size, split
fractions) applies here: every image given is scored.

The rules are the labelled readers' own, not a copy: a CSV is read by
`csv_table.read_listing(..., need_labels=False)` (columns by meaning, dialects, file names
matched as there), a folder by `tree.list_images`, and hidden entries and image types by
loaders/filetypes.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import ConfigError
from loaders import csv_table, filetypes, hdf5_store, images, tree
from loaders.records import Dataset, Split

SPLIT = "unlabelled"  # the split name given to every row of an unlabelled input
Listed = tuple[list[str], list[tuple[str, str]]]  # (image files, [(path, reason skipped)])


def _is_labelled(csv_path: Path) -> bool:
    return csv_path in csv_table.label_csvs(csv_path.parent)


def _from_csv(csv_path: Path, store: Path | None = None, labelled_too: bool = False) -> Listed | None:
    """The files (or `store` keys) a CSV lists, None when it also holds labels (the labelled reader's)."""
    if not labelled_too and _is_labelled(csv_path):
        return None
    finder = hdf5_store.KeyFinder(store) if store is not None else None
    listing = csv_table.read_listing(csv_path.parent, csv_path, need_labels=False, finder=finder)
    return listing.files, listing.skipped


def _from_store(root: Path) -> Listed | None:
    """A folder as ISIC 2024 ships it: its test store (keys in its CSV's order) is what is scored;
    a store whose CSV holds labels (the training pair alone) is the labelled reader's."""
    store, table = hdf5_store.pick(root, "test")
    if hdf5_store.prefix(store).lower() != "test" and table is not None and _is_labelled(table):
        return None
    if table is None and tree.list_images(root)[0]:
        return _from_folder(root)  # images beside a stray .h5 (model weights): the images are the input
    if table is None:
        listing = hdf5_store.listing_from_keys(store)
        return listing.files, listing.skipped
    return _from_csv(table, store, labelled_too=True)


def _from_folder(root: Path) -> Listed | None:
    if any(p.is_dir() for p in tree.visible_children(root)):
        return None  # subfolders: a class tree (or predefined splits), read by the labelled loader
    files, skipped = tree.list_images(root)
    skipped = [(p, why) for p, why in skipped if not p.lower().endswith(".csv")]  # a listing beside its images
    return (files, skipped) if files else None


def _any_listing(path: Path) -> Listed | None:
    """Every file the input lists or holds, its labels ignored: a CSV's file column (another clinic's
    label columns beside it are not ours to read), else every image below a folder, nested or not."""
    if path.is_file():
        if filetypes.is_image_name(path.name):
            return [str(path.resolve())], []
        if path.suffix.lower() not in csv_table.TABLE_SUFFIXES:
            return None
        listing = csv_table.read_listing(path.parent, path, need_labels=False)
        return listing.files, listing.skipped
    for candidate in csv_table.tables(path):
        try:
            listing = csv_table.read_listing(path, candidate, need_labels=False)
        except ConfigError:  # no file column: not a listing; the next table or the images
            continue
        if listing.files:
            return listing.files, listing.skipped
    files, skipped = tree.list_images(path)
    skipped = [(p, why) for p, why in skipped if not p.lower().endswith(csv_table.TABLE_SUFFIXES)]
    return (files, skipped) if files else None


def _listed(path: Path) -> Listed | None:
    if path.is_file():
        if filetypes.is_image_name(path.name):
            return [str(path.resolve())], []
        if path.suffix.lower() in hdf5_store.STORE_SUFFIXES:
            listing = hdf5_store.listing_from_keys(path)
            return listing.files, listing.skipped
        return _from_csv(path, hdf5_store.store_for_csv(path)) if path.suffix.lower() == ".csv" else None
    if not path.is_dir():
        return None
    if hdf5_store.stores(path):
        return _from_store(path)
    if csv_table.label_csvs(path):
        return None  # a labelled CSV here: the labelled reader's, whatever else is beside it
    for candidate in sorted(path.glob("*.csv")):
        if filetypes.is_hidden(candidate.name):
            continue
        try:
            return _from_csv(candidate)
        except ConfigError:  # no file column: not a listing (metadata, say); the next CSV or the images
            continue
    return _from_folder(path)


def read(path: str, classes: list[str], workers: int = 2, ignore_labels: bool = False) -> Dataset | None:
    """Every image of an unlabelled input as the test split, or None for a labelled input;
    `ignore_labels`: any input read as a list of images (prediction needs no labels)."""
    source = Path(path).expanduser()
    listed = _any_listing(source) if ignore_labels else _listed(source)
    if listed is None:
        return None
    files, skipped = listed
    good, bad, common = images.scan(files, workers=max(1, workers)) if files else ([], [], None)
    kept = [files[i] for i in good]
    empty = Split(labels=np.zeros(0, np.int64), files=[])
    test = Split(labels=np.zeros(len(kept), np.int64), files=kept)
    side = max(common) if common else 0
    return Dataset(source.stem or source.name, str(source), list(classes), empty, empty, test, native_size=side,
                   skipped=skipped + bad, partition="unlabelled: every image given, no split")
