"""Inputs without labels, as new patients come: one image, a flat folder of images, or a CSV
(or a folder with a CSV) whose only use is to list files.

`read(path, classes)` returns a `Dataset` whose test split holds every readable image in
input order (labels 0: unused), with everything else listed in `skipped` with its reason
(unreadable, missing, not an image type, duplicate); or None when the input is labelled
(a class tree, a CSV with a label column or one column per class, an npz), which the
labelled readers in loaders/datasets.py then take. No training option (subset size, split
fractions) applies here: every image given is scored.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from loaders import images
from loaders.datasets import FILE_COLUMNS, IMAGE_EXTENSIONS, LABEL_COLUMNS, Dataset, Split

SPLIT = "unlabelled"  # the split name given to every row of an unlabelled input


def _hidden(name: str) -> bool:
    return name.startswith((".", "@")) or name == "__MACOSX"


def _csv_rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [row for row in csv.reader(fh) if row and any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _file_column(rows: list[list[str]], root: Path, classes: list[str]) -> tuple[int, bool] | None:
    """(file column, has header) of a CSV that lists files and nothing to learn from; None
    when it has a label column, a column per class, or no file column."""
    if _labelled(rows, classes):
        return None
    header = [h.strip().lower() for h in rows[0]]
    named = next((header.index(c) for c in FILE_COLUMNS if c in header), None)
    if named is not None:
        return named, True
    first = rows[0][0].strip()
    if len(rows[0]) == 1 and first and (root / first).is_file():  # headerless list of files
        return 0, False
    return None


def _from_csv(path: Path, classes: list[str]) -> tuple[list[str], list[tuple[str, str]]] | None:
    rows = _csv_rows(path)
    root = path.parent.resolve()
    found = _file_column(rows, root, classes) if rows else None
    if found is None:
        return None
    col, has_header = found
    files, skipped, seen = [], [], set()
    for line, row in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        name = row[col].strip() if col < len(row) else ""
        where = f"{path}:{line}"
        full = (root / name).resolve()
        if not full.exists() and (root / "images" / name).exists():
            full = (root / "images" / name).resolve()
        if not name or os.path.isabs(name) or not full.is_relative_to(root):
            skipped.append((where, f"not a file inside {root} ({name!r})"))
        elif str(full) in seen:
            skipped.append((where, f"duplicate row (first one kept): {name}"))
        elif not full.is_file():
            skipped.append((str(full), "listed in the CSV but missing"))
        else:
            seen.add(str(full))
            files.append(str(full))
    return files, skipped


def _from_folder(root: Path) -> tuple[list[str], list[tuple[str, str]]] | None:
    entries = sorted(p for p in root.iterdir() if not _hidden(p.name))
    if any(p.is_dir() for p in entries):
        return None  # subfolders: a class tree (or predefined splits), read by the labelled loader
    files, skipped = [], []
    for p in entries:
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(str(p.resolve()))
        elif p.suffix.lower() != ".csv":
            skipped.append((str(p), f"not an image type read here ({p.suffix or 'no extension'})"))
    return (files, skipped) if files else None


def _listed(path: Path, classes: list[str]) -> tuple[list[str], list[tuple[str, str]]] | None:
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return [str(path.resolve())], []
        return _from_csv(path, classes) if path.suffix.lower() == ".csv" else None
    if not path.is_dir():
        return None
    csvs = sorted(path.glob("*.csv"))
    if any(_labelled(_csv_rows(c), classes) for c in csvs):
        return None  # a labelled CSV anywhere here: the labelled reader's, whatever else is beside it
    for candidate in csvs:
        listed = _from_csv(candidate, classes)
        if listed is not None:
            return listed
    return _from_folder(path)


def _labelled(rows: list[list[str]], classes: list[str]) -> bool:
    header = [h.strip().lower() for h in rows[0]] if rows else []
    return any(h in LABEL_COLUMNS for h in header) or any(c.lower() in header for c in classes)


def read(path: str, classes: list[str], workers: int = 2) -> Dataset | None:
    """Every image of an unlabelled input as the test split, or None for a labelled input."""
    source = Path(path).expanduser()
    listed = _listed(source, classes)
    if listed is None:
        return None
    files, skipped = listed
    good, bad, common = images.scan(files, workers=max(1, workers)) if files else ([], [], None)
    kept = [files[i] for i in good]
    empty = Split(labels=np.zeros(0, np.int64), files=[])
    test = Split(labels=np.zeros(len(kept), np.int64), files=kept)
    side = max(common) if common else 0
    return Dataset(source.stem or source.name, str(source), list(classes), empty, empty, test, native_size=side,
                   skipped=skipped + bad)
