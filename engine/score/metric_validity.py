"""Figures that cannot be computed are written as such, never as a number that means something else.

A macro figure over the classes (balanced accuracy, macro F1/precision/recall, macro AUC) needs
every class in the split: computed over the classes present it answers another question, and a
test split with one class of two scores a balanced accuracy of 1.0 for a model that never saw the
other. So in `metrics.json` (training and engine.evaluate) a split that lacks a class gets:
- those keys (and their `_ci_low`/`_ci_high` intervals, and `uncorrected.*` twins) as null,
- the per-class sensitivity, F1 and AUC of each absent class as null,
- `<split>.balanced_accuracy_over_present`: the figure over the classes present, under its own name,
- `<split>.note`: one line naming the absent classes and the null keys.
An empty split has every figure null and a note saying so. Per-epoch validation (selection) is
not changed: it compares epochs of one run on one split.
"""
from __future__ import annotations

import numpy as np

from loaders.split_audit import class_counts

MACRO = ("balanced_accuracy", "f1_macro", "precision_macro", "recall_macro", "auc_macro")
_MACRO_KEYS = {m + tail for m in MACRO for tail in ("", "_ci_low", "_ci_high")}
_PER_CLASS = ("sensitivity", "f1", "auc", "precision")


def mark(metrics: dict, prefix: str, labels, classes: list[str]) -> None:
    """Null the figures of `prefix` ('test', 'val') that its `labels` cannot support, in place."""
    counts = class_counts(labels, len(classes))  # multi-label: positives per finding
    keys = [k for k in metrics if k.startswith(prefix + ".")]
    if counts.sum() == 0:
        for k in keys:
            if isinstance(metrics[k], float):
                metrics[k] = None
        metrics[f"{prefix}.note"] = f"no {prefix} images: no figure computable (null)"
        return
    absent = [c for c, n in zip(classes, counts) if n == 0]
    if not absent:
        return
    metrics[f"{prefix}.balanced_accuracy_over_present"] = metrics.get(f"{prefix}.balanced_accuracy")
    for k in keys:
        if k.rsplit(".", 1)[-1] in _MACRO_KEYS:
            metrics[k] = None
    for c in absent:
        for kind in _PER_CLASS:
            if f"{prefix}.{kind}.{c}" in metrics:
                metrics[f"{prefix}.{kind}.{c}"] = None
    metrics[f"{prefix}.note"] = (f"class(es) {', '.join(absent)} absent from {prefix} ({len(classes) - len(absent)} of "
                                 f"{len(classes)} present): {', '.join(MACRO)} not computable (null); "
                                 f"balanced_accuracy_over_present covers the classes present only")


def shown(value) -> str:
    """A figure for a console line: 4 decimals, or n/a when not computable."""
    return "n/a" if value is None else f"{value:.4f}"
