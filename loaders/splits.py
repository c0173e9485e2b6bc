"""Seeded, stratified splits that never put one group (lesion, patient) in two parts.

Stratification works at the group level: each group takes the label of most of its images,
groups of one label are shuffled and dealt out, so class proportions match across parts and
no group straddles two. Without groups every image is its own group.
"""
from __future__ import annotations

import numpy as np

from loaders.multilabel import stratify_key


def _group_table(labels: np.ndarray, groups: np.ndarray | None):
    """Per-group representative label, and each image's group index. Multi-label findings
    (N x K) stratify on each image's rarest positive finding (loaders/multilabel.py)."""
    if labels.ndim == 2:
        labels = stratify_key(labels)
    if groups is None:
        return labels.astype(np.int64), np.arange(len(labels))
    uniq, inverse = np.unique(groups, return_inverse=True)
    n_classes = int(labels.max()) + 1 if len(labels) else 1
    counts = np.zeros((len(uniq), n_classes), np.int64)
    np.add.at(counts, (inverse, labels), 1)
    return counts.argmax(1), inverse


def _deal(group_labels: np.ndarray, weights: list[float], rng: np.random.Generator) -> np.ndarray:
    """Assign each group to a part, class by class, in proportion to `weights`."""
    part = np.empty(len(group_labels), np.int64)
    cumulative = np.cumsum(weights) / np.sum(weights)
    for c in np.unique(group_labels):
        members = np.flatnonzero(group_labels == c)
        rng.shuffle(members)
        # Largest-remainder boundaries so that every part gets its share of each class.
        bounds = np.round(cumulative * len(members)).astype(int)
        start = 0
        for p, stop in enumerate(bounds):
            part[members[start:stop]] = p
            start = stop
    return part


def train_val_test(labels: np.ndarray, groups: np.ndarray | None, val_fraction: float,
                   test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (train, val, test), sorted, disjoint, covering every image."""
    group_labels, image_group = _group_table(labels, groups)
    rng = np.random.default_rng(seed)
    weights = [1.0 - val_fraction - test_fraction, val_fraction, test_fraction]
    part_of_group = _deal(group_labels, weights, rng)
    part = part_of_group[image_group]
    return tuple(np.flatnonzero(part == p) for p in range(3))


def k_folds(labels: np.ndarray, groups: np.ndarray | None, k: int, seed: int) -> list[np.ndarray]:
    """K disjoint index arrays covering every image, stratified and grouped."""
    if k < 2:
        raise ValueError(f"k-fold needs at least 2 folds, got {k}")
    group_labels, image_group = _group_table(labels, groups)
    rng = np.random.default_rng(seed)
    part_of_group = _deal(group_labels, [1.0] * k, rng)
    part = part_of_group[image_group]
    return [np.flatnonzero(part == p) for p in range(k)]
