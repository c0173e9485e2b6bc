"""What a drawn split can and cannot mean, said before training rather than after the figures.

`audit(ds, val_fraction, test_fraction)` returns one warning line per problem, for the log,
`metrics.json` (`data.warnings`) and the report:
- an empty val or test split (the run cannot select, or has nothing to test);
- a class absent from val or test: the macro figures over all classes cannot be computed there
  (engine/score/metric_validity.py writes them as null);
- a drawn split far from the fractions asked for (a large group, a patient owning most images,
  cannot be cut): the share each part holds and the largest group's share;
- a test split too small for a figure: fewer than MIN_TEST images, or a class with fewer than
  MIN_TEST_PER_CLASS, where one image moves a figure by more than the differences it is read for.
"""
from __future__ import annotations

import numpy as np

MIN_TEST = 20
MIN_TEST_PER_CLASS = 3
FRACTION_SLACK = 0.05     # absolute: rounding on small data is not a warning
FRACTION_RATIO = 0.5      # relative: off by more than half the request is


def class_counts(labels, num_classes: int) -> np.ndarray:
    """Images per class; for multi-label (N x K 0/1) labels, positives per finding. Padded or
    unreadable rows (negative labels) are not counted."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        kept = labels[(labels >= 0).all(1)]
        return (kept > 0.5).sum(0).astype(np.int64) if len(kept) else np.zeros(num_classes, np.int64)
    return np.bincount(labels[labels >= 0].astype(np.int64), minlength=num_classes)


def _absent(ds, split) -> list[str]:
    counts = class_counts(split.labels, ds.num_classes)
    return [c for c, k in zip(ds.classes, counts) if k == 0]


def _largest_group(ds) -> str:
    groups = [s.groups for s in (ds.train, ds.val, ds.test) if s.groups is not None]
    if not groups:
        return ""
    ids, counts = np.unique(np.concatenate(groups), return_counts=True)
    top = int(counts.argmax())
    return f"; the largest group ({str(ids[top])!r}) holds {counts[top] / counts.sum():.0%} of the images and cannot be cut"


def _fractions(ds, val_fraction: float, test_fraction: float) -> list[str]:
    total = len(ds.train) + len(ds.val) + len(ds.test)
    out = []
    for name, asked in (("val", val_fraction), ("test", test_fraction)):
        got = len(ds.split(name)) / max(total, 1)
        if asked > 0 and len(ds.split(name)) and abs(got - asked) > max(FRACTION_SLACK, FRACTION_RATIO * asked):
            out.append(f"the {name} split holds {got:.0%} of the images against a requested {asked:g} "
                       f"(train/val/test {len(ds.train)}/{len(ds.val)}/{len(ds.test)}){_largest_group(ds)}")
    return out


def audit(ds, val_fraction: float, test_fraction: float) -> list[str]:
    warnings = []
    if not len(ds.val):
        warnings.append("the val split is empty: no epoch can be selected; the last epoch's weights are kept "
                        "(raise --data.val_fraction or add images)")
    if not len(ds.test):
        warnings.append("the test split is empty: no test figure is computed (raise --data.test_fraction or add images)")
    for name in ("val", "test"):
        absent = _absent(ds, ds.split(name)) if len(ds.split(name)) else []
        if absent:
            warnings.append(f"class(es) {', '.join(repr(c) for c in absent)} absent from the {name} split: its "
                            "macro figures over all classes cannot be computed (null in metrics.json)")
    if ds.partition.startswith("stratified"):  # a predefined partition is used as given
        warnings += _fractions(ds, val_fraction, test_fraction)
    if len(ds.test):
        counts = class_counts(ds.test.labels, ds.num_classes)
        rare = [(c, int(k)) for c, k in zip(ds.classes, counts) if 0 < k < MIN_TEST_PER_CLASS]
        if len(ds.test) < MIN_TEST or rare:
            detail = f", {', '.join(f'{k} of {c!r}' for c, k in rare)}" if rare else ""
            warnings.append(f"the test split is too small for a figure ({len(ds.test)} images{detail}): one image "
                            f"moves a figure by more than the differences it is read for; read the bootstrap intervals")
    return warnings
