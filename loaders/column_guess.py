"""Columns chosen by what they hold when no header names them (loaders/csv_table.py asks here
only after its lists of names found nothing).

- file column: the column whose cells name files of the data folder (by path, name or bare id,
  as loaders/file_finder.py finds them) for at least half of the rows sampled; ISIC 2024's
  `isic_id`, any `<something>_id` beside its images;
- label column: among the columns left, those holding few distinct values, each repeated
  (2 to MAX_CLASSES values, on average at least two rows each): one such column is the label; of
  several, the one whose header reads as a label (`diagnostic`, `class_name`, `finding`, ...);
  otherwise the choice is the user's, and the error names the candidates.
"""
from __future__ import annotations

import re

from common.errors import ConfigError
from loaders import labels as label_rules

SAMPLE = 200
MAX_CLASSES = 100
LABEL_WORDS = ("diagnos", "label", "class", "target", "finding", "category", "dx", "grade", "outcome", "benign",
               "malignan", "pathology", "disease")


def sample(body) -> list[list[str]]:
    return [r for _, r in body if any(c.strip() for c in r)][:SAMPLE]


def file_column(header: list[str], body, finder, csv_path) -> int | None:
    """The column whose cells find files for at least half of the sampled rows (the most such)."""
    rows = sample(body)
    best, best_hits = None, 0
    for col in range(len(header)):
        cells = [r[col] for r in rows if col < len(r) and r[col].strip()][:50]
        hits = 0
        for cell in cells:
            try:
                hits += finder.find(cell, csv_path, 0)[0] is not None
            except ConfigError:  # an absolute or escaping path is not a file of this folder
                continue
        if cells and hits * 2 >= len(rows[:50]) and hits > best_hits:
            best, best_hits = col, hits
    return best


def distinct_values(rows, col: int) -> set[str]:
    return {label_rules.normalize(r[col]) for r in rows if col < len(r) and not label_rules.is_missing(r[col])}


def label_candidates(header: list[str], body, free: list[int]) -> list[int]:
    rows = sample(body)
    found = []
    for col in free:
        present = [r[col] for r in rows if col < len(r) and not label_rules.is_missing(r[col])]
        values = distinct_values(rows, col)
        if 2 <= len(values) <= MAX_CLASSES and 2 * len(values) <= len(present):
            found.append(col)
    return found


def reads_as_label(cell: str) -> bool:
    words = re.split(r"[^a-z0-9]+", cell.lower())
    return any(w.startswith(LABEL_WORDS) for w in words if w)


def label_column(header: list[str], body, free: list[int]) -> tuple[int | None, list[int]]:
    """(the label column or None, the candidates it was chosen from)."""
    candidates = label_candidates(header, body, free)
    named = [c for c in candidates if reads_as_label(header[c])]
    if len(named) == 1:
        return named[0], candidates
    if len(candidates) == 1:
        return candidates[0], candidates
    return None, candidates
