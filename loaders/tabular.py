"""Tabular metadata for CSV datasets (`--model.metadata age,sex,localization`).

The columns are read from a CSV in the data folder that has them (HAM10000 keeps them in
HAM10000_metadata.csv beside labels.csv), joined on the image id: the file name without its
extension, matched against an id column (image_id, file, ...). Each column becomes float32
features fitted on the training split only, so nothing about val/test leaks in:

- numeric (every present value parses as a number): standardized value and a missing flag;
  a missing value is 0 (the training mean) with the flag set;
- categorical: one-hot over the training vocabulary plus one "missing or unseen" slot.

Missing means an empty cell, "unknown", any spreadsheet no-value (`nan`, `NA`, `#N/A`, `#VALUE!`,
`null`, `-`, `?`, ...: loaders/labels.py) or no matching row.

The batch contract stays `(images, labels)` for every backend; with metadata a loader is
wrapped by `MetaLoader`, which yields `(images, labels, meta)`: meta rows are gathered on the
device from a per-split table by the same epoch order the backend used, so they line up
with the images row for row (padded evaluation rows get the first sample's row; their
labels are -1 and are ignored anyway).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from common.errors import ConfigError
from loaders import labels as label_rules
from loaders.csv_table import read_rows
from loaders.datasets import FILE_COLUMNS, Dataset

MISSING = {"unknown"}  # besides every spelling loaders/labels.py reads as no value
ID_COLUMNS = ("image_id",) + FILE_COLUMNS


def parse_columns(text: str) -> list[str]:
    cols = [c.strip() for c in text.split(",") if c.strip()]
    if not cols:
        raise ConfigError("--model.metadata expects comma-separated column names, e.g. age,sex,localization")
    if len(set(c.lower() for c in cols)) != len(cols):
        raise ConfigError(f"--model.metadata {text}: a column is named twice")
    return cols


def _stem(name: str) -> str:
    return Path(name.strip()).stem


def read_table(root: Path, columns: list[str]) -> dict[str, list[str]]:
    """{image id: [value per column]} from the first CSV in `root` that has every column."""
    wanted = [c.lower() for c in columns]
    seen_headers = []
    for path in sorted(root.glob("*.csv"), key=lambda p: (p.name != "labels.csv", p.name)):
        rows = [cells for _, cells in read_rows(path)]  # same dialect detection as the label CSV
        if not rows:
            continue
        header = [h.strip().lower() for h in rows[0]]
        seen_headers.append(f"{path.name}: {','.join(header)}")
        id_col = next((header.index(c) for c in ID_COLUMNS if c in header), None)
        if id_col is None or not all(c in header for c in wanted):
            continue
        idx = [header.index(c) for c in wanted]
        table = {}
        for row in rows[1:]:
            if len(row) > id_col and row[id_col].strip():
                table.setdefault(_stem(row[id_col]), [row[i].strip() if i < len(row) else "" for i in idx])
        return table
    raise ConfigError(f"--model.metadata {','.join(columns)}: no CSV in {root} has an id column and all of "
                      f"these columns (found {'; '.join(seen_headers) or 'no CSV'})")


@dataclass
class ColumnEncoding:
    name: str
    kind: str                        # numeric|categorical
    mean: float = 0.0
    std: float = 1.0
    vocab: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return 2 if self.kind == "numeric" else len(self.vocab) + 1

    def feature_names(self) -> list[str]:
        if self.kind == "numeric":
            return [self.name, f"{self.name}:missing"]
        return [f"{self.name}={v}" for v in self.vocab] + [f"{self.name}:missing"]


def _is_missing(value: str) -> bool:
    return value.strip().lower() in MISSING or label_rules.is_missing(value)


def _as_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def fit_column(name: str, values: list[str]) -> ColumnEncoding:
    present = [v for v in values if not _is_missing(v)]
    numbers = [_as_float(v) for v in present]
    if present and all(x is not None for x in numbers):
        arr = np.asarray(numbers, np.float64)
        return ColumnEncoding(name, "numeric", float(arr.mean()), float(arr.std()) or 1.0)
    return ColumnEncoding(name, "categorical", vocab=tuple(sorted({v.lower() for v in present})))


def encode_column(enc: ColumnEncoding, values: list[str]) -> np.ndarray:
    out = np.zeros((len(values), enc.width), np.float32)
    for row, value in enumerate(values):
        if _is_missing(value):
            out[row, -1] = 1.0
        elif enc.kind == "numeric":
            number = _as_float(value)
            if number is None:
                out[row, -1] = 1.0
            else:
                out[row, 0] = (number - enc.mean) / enc.std
        else:
            key = value.lower()
            out[row, enc.vocab.index(key) if key in enc.vocab else -1] = 1.0
    return out


def attach_metadata(ds: Dataset, columns_text: str) -> tuple[Dataset, list[str]]:
    """The dataset with `meta` filled on every split, and the feature names."""
    columns = parse_columns(columns_text)
    if ds.train.files is None:
        raise ConfigError(f"--model.metadata needs a folder with a CSV of tabular columns; {ds.source} has none")
    table = read_table(Path(ds.source), columns)
    splits = {name: ds.split(name) for name in ("train", "val", "test")}
    raw = {name: [table.get(_stem(f), [""] * len(columns)) for f in s.files] for name, s in splits.items()}
    matched = sum(_stem(f) in table for s in splits.values() for f in s.files)
    if matched == 0:
        raise ConfigError(f"--model.metadata: no image in {ds.source} matches an id in the metadata CSV "
                          "(ids are file names without the extension)")
    encodings = [fit_column(c, [r[i] for r in raw["train"]]) for i, c in enumerate(columns)]
    filled = {}
    for name, split in splits.items():
        parts = [encode_column(e, [r[i] for r in raw[name]]) for i, e in enumerate(encodings)]
        filled[name] = replace(split, meta=np.concatenate(parts, axis=1))
    names = [n for e in encodings for n in e.feature_names()]
    return replace(ds, train=filled["train"], val=filled["val"], test=filled["test"]), names


class MetaLoader:
    """Wraps any backend: yields `(images, labels, meta)` with meta float32 (B, F) on the device."""

    def __init__(self, inner):
        self.inner = inner
        # The backend's own split: a backend that dropped unreadable files subset it, meta included.
        self.table = torch.as_tensor(inner.split.meta, dtype=torch.float32, device=inner.device)

    def __getattr__(self, name):  # steps, set_epoch, epoch_order, labels, bad, ... of the backend
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        order, _ = self.inner.epoch_order()
        bs, step = self.inner.batch_size, self.inner.start_step
        for images, labels in self.inner:
            yield images, labels, self.table.index_select(0, order[step * bs:(step + 1) * bs])
            step += 1
