"""Multi-label findings (several per image, or none): how they are recognised and held.

A dataset is multi-label when its data says so, never by an option:
- an `.npz` whose labels are N x K (K >= 2) of 0/1 values (ChestMNIST: N x 14);
- a CSV with two or more 0/1 columns (no label column) where some row has more than one 1
  (CheXpert-style: one column per finding); a row of all 0s then means "no finding";
- a CSV label column whose cells list findings joined by `|` (NIH ChestX-ray14 `Finding Labels`
  = `Effusion|Infiltration`), where `No Finding` (NO_FINDING) means none.
Both a `|`-separated label column and multi-hot 0/1 columns in one CSV is ambiguous and refused
with one line naming the columns.

Labels are then a float32 N x K 0/1 matrix (`Split.labels.ndim == 2`); classes are the K
finding names. Splits stratify on each image's rarest positive finding (`stratify_key`), and
the balanced sampler weights each image by its rarest finding (`rarest_finding_weights`).
"""
from __future__ import annotations

import numpy as np

from common.errors import ConfigError
from loaders import labels as label_rules

SEPARATOR = "|"
# Cells meaning "none of the findings": NIH's `No Finding` and common spellings of it.
NO_FINDING = ("no finding", "no_finding", "nofinding", "no findings", "normal", "none")

# ChestMNIST (MedMNIST v2) carries no names in its npz: these are its 14 columns, in order.
KNOWN_NPZ_FINDINGS = {"chest": ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
                                "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
                                "pleural", "hernia"]}


def is_multilabel(labels: np.ndarray) -> bool:
    return np.asarray(labels).ndim == 2


# ----------------------------------------------------------------------------- CSV cells

def separated_findings(cell: str) -> tuple[str, ...]:
    """'Effusion|Infiltration' -> ('Effusion', 'Infiltration'); 'No Finding' -> ()."""
    text = label_rules.clean_text(cell)
    if text.lower() in NO_FINDING:
        return ()
    return tuple(sorted({label_rules.normalize(p) for p in text.split(SEPARATOR) if p.strip()}))


def has_separated_cells(body, col: int) -> bool:
    return any(col < len(r) and SEPARATOR in r[col] for _, r in body)


def multi_hot_rows(body, cols: list[int], one_hot_values: dict) -> int:
    """Rows with more than one 1 among `cols`: if any, the columns are findings, not classes."""
    return sum(1 for _, r in body if sum(1 for c in cols if c < len(r) and one_hot_values.get(r[c].strip()) == 1) > 1)


def refuse_ambiguous(path, header: list[str], label_col: int, hot_cols: list[int]) -> None:
    names = ", ".join(repr(header[c].strip()) for c in hot_cols)
    raise ConfigError(f"{path}: ambiguous labels: column {header[label_col].strip()!r} lists '{SEPARATOR}'-separated "
                      f"findings and the 0/1 columns {names} have rows with several 1s; keep one of the two "
                      "(drop the other columns or the label column)")


def finding_names(label_sets) -> list[str]:
    """The findings named in `|`-separated cells, sorted as classes are."""
    return label_rules.sorted_classes({f for s in label_sets for f in s})


def matrix(label_sets, names: list[str]) -> np.ndarray:
    """N x K float32 0/1 from each image's tuple of finding names."""
    index = {n: i for i, n in enumerate(names)}
    y = np.zeros((len(label_sets), len(names)), np.float32)
    for row, found in enumerate(label_sets):
        y[row, [index[f] for f in found]] = 1.0
    return y


# ----------------------------------------------------------------------------- npz

def npz_labels(path, prefix: str, y: np.ndarray, n: int) -> np.ndarray:
    """An npz's N x K label array as float32 0/1, or one line saying why it is not one."""
    if y.shape[0] != n:
        raise ConfigError(f"{path}: {prefix}_labels has {y.shape[0]} rows for {n} images")
    if y.dtype.kind not in "iufb":
        raise ConfigError(f"{path}: {prefix}_labels has dtype {y.dtype}; expected 0/1 integers")
    odd = y[(y != 0) & (y != 1)]
    if odd.size:
        raise ConfigError(f"{path}: {prefix}_labels has shape {y.shape} but holds {odd.flat[0].item()!r}; an N x K "
                          "label matrix is read as multi-label findings and must hold only 0 and 1")
    return y.astype(np.float32)


def npz_names(path, k: int) -> list[str]:
    known = next((names for key, names in KNOWN_NPZ_FINDINGS.items() if key in path.name.lower()), None)
    if known is not None and len(known) == k:
        return list(known)
    return [f"finding{i}" for i in range(k)]


# ----------------------------------------------------------------------------- splits and sampling

def stratify_key(y: np.ndarray) -> np.ndarray:
    """Per image: the index of its rarest positive finding (by count over `y`), or K for none.
    Stratifying on it keeps every finding, the rare ones first, in each part."""
    y = np.asarray(y) > 0.5
    counts = y.sum(0)
    k = y.shape[1]
    rank = np.where(y, counts[None, :], np.iinfo(np.int64).max)
    key = rank.argmin(1)
    return np.where(y.any(1), key, k).astype(np.int64)


def rarest_finding_weights(y, alpha: float):
    """Sampler weight per image: count(rarest positive finding) ** -alpha; images with no
    finding weigh as the most common finding does, so they stay present but do not dominate.
    Works on torch tensors (the device sampler) and numpy arrays alike."""
    positive = y > 0.5
    counts = positive.sum(0).clamp(min=1).double() if hasattr(y, "clamp") else np.maximum(positive.sum(0), 1)
    per_finding = counts ** (-alpha)
    if hasattr(y, "clamp"):
        weight = (positive.double() * per_finding).amax(1)
        return weight.where(positive.any(1), per_finding.min())
    weight = (positive * per_finding).max(1)
    return np.where(positive.any(1), weight, per_finding.min())


def positive_counts(y: np.ndarray) -> np.ndarray:
    return (np.asarray(y) > 0.5).sum(0).astype(np.int64)
