"""Label spelling, settled before any class exists.

Two cells that a person reads as the same label are one class: Unicode NFC (macOS writes
folder names decomposed, NFD), surrounding whitespace stripped, and numbers compared as
numbers (`1`, `1.0` and ` 01` are class `1`; classes sort 2 before 10). Labels that still
differ only by case are refused by the caller: `Mel` and `mel` may be a typo or two codes,
and which one is meant is the user's call.
"""
from __future__ import annotations

import functools
import math
import unicodedata

# Spreadsheet and pandas spellings of "no value": a label, never a class of its own.
MISSING_LABELS = ("nan", "na", "n/a", "none", "null", "?")


@functools.lru_cache(maxsize=65536)  # 400k-row CSVs repeat a few labels and group ids
def clean_text(text: str) -> str:
    """NFC and stripped: the spelling every name is compared in."""
    return unicodedata.normalize("NFC", text).strip()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@functools.lru_cache(maxsize=65536)
def normalize(label: str) -> str:
    """The canonical spelling of one label ('1.0' -> '1', ' nv ' -> 'nv')."""
    text = clean_text(label)
    value = _number(text)
    if value is None:
        return text
    return str(int(value)) if value.is_integer() else repr(value)


@functools.lru_cache(maxsize=65536)
def is_missing(label: str) -> bool:
    text = clean_text(label)
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
