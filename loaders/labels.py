"""Label spelling, settled before any class exists.

Two cells that a person reads as the same label are one class: Unicode NFC (macOS writes
folder names decomposed, NFD), surrounding whitespace stripped, and numbers compared as
numbers (`1`, `1.0` and ` 01` are class `1`; classes sort 2 before 10), runs of inner
whitespace read as one space (`seborrheic  keratosis` is `seborrheic keratosis`). Labels that still
differ only by case are refused by the caller: `Mel` and `mel` may be a typo or two codes,
and which one is meant is the user's call.
"""
from __future__ import annotations

import functools
import math
import re
import unicodedata

# Spreadsheet, pandas and R spellings of "no value" (Excel's error values included): missing in
# every label, group and split column, never a class, a group or a part of their own.
MISSING_LABELS = ("nan", "na", "n/a", "n.a.", "<na>", "nat", "none", "null", "nil", "?", "-", "--", "#n/a",
                  "#na", "#value!", "#ref!", "#div/0!", "#num!", "#name?", "#null!", "#n/a n/a")


@functools.lru_cache(maxsize=65536)  # 400k-row CSVs repeat a few labels and group ids
def clean_text(text: str) -> str:
    """NFC and stripped: the spelling every name is compared in."""
    return unicodedata.normalize("NFC", text).strip()


def collapse_spaces(text: str) -> str:
    """Inner runs of whitespace (a double space, a tab, a no-break space) as one space."""
    return " ".join(text.split())


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@functools.lru_cache(maxsize=65536)
def normalize(label: str) -> str:
    """The canonical spelling of one label ('1.0' -> '1', ' nv ' -> 'nv')."""
    text = collapse_spaces(clean_text(label))
    if re.fullmatch(r"[+-]?\d+", text):  # exact: a long id must not round through a float
        return str(int(text))
    value = _number(text)
    if value is None:
        return text
    return str(int(value)) if value.is_integer() else repr(value)


def group_id(cell: str) -> str:
    """The canonical spelling of a group (patient, lesion) id: as a label ('1017.0' -> '1017',
    inner spaces collapsed) and case-folded ('P01' is 'p01': an id typed twice, not two patients);
    '' when missing (spreadsheet no-values included)."""
    return "" if is_missing(cell) else normalize(cell).casefold()


@functools.lru_cache(maxsize=65536)
def is_missing(label: str) -> bool:
    text = collapse_spaces(clean_text(label))
    return not text or text.lower() in MISSING_LABELS


def sort_key(label: str) -> tuple:
    """Numbers first, in numeric order; then text in code-point order."""
    value = _number(label)
    return (0, value, "") if value is not None else (1, 0.0, label)


def sorted_classes(labels) -> list[str]:
    return sorted(set(labels), key=sort_key)


def case_clash(classes: list[str]) -> list[str] | None:
    """The first group of classes that differ only by case, or None."""
    by_case: dict[str, list[str]] = {}
    for c in classes:
        by_case.setdefault(c.casefold(), []).append(c)
    return next((sorted(names) for names in by_case.values() if len(names) > 1), None)
