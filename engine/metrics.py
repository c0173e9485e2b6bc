"""Classification metrics from the device confusion matrix and score buffer.

Everything is computed with torch on the device where the buffers live; `summarize` moves
only the final scalars to the host (one sync, at evaluation end). AUC is one-vs-rest per
class via the Mann-Whitney rank statistic with tie-averaged ranks, which equals the
trapezoidal ROC area scikit-learn computes; macro AUC averages classes present in the labels.
"""
from __future__ import annotations

import torch


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b > 0, a / b.clamp(min=1e-12), torch.zeros_like(a))


def from_confusion(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    cm = cm.to(torch.float64)
    tp = cm.diagonal()
    support = cm.sum(1)
    predicted = cm.sum(0)
    total = cm.sum()
    recall = _safe_div(tp, support)
    precision = _safe_div(tp, predicted)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    present = support > 0
    tn = total - support - predicted + tp
    specificity = _safe_div(tn, tn + (predicted - tp))
    return {
        "accuracy": _safe_div(tp.sum(), total),
        "balanced_accuracy": recall[present].mean() if present.any() else total * 0,
        # sklearn's macro F1 averages over every class seen in labels or predictions
        "f1_macro": f1[present | (predicted > 0)].mean(),
        "precision_macro": precision[present | (predicted > 0)].mean(),
        "recall_macro": recall[present | (predicted > 0)].mean(),
        "f1_weighted": _safe_div((f1 * support).sum(), support.sum()),
        "precision_weighted": _safe_div((precision * support).sum(), support.sum()),
        "per_class_recall": recall,
        "per_class_precision": precision,
        "per_class_f1": f1,
        "per_class_specificity": specificity,
    }


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties sharing their average rank."""
    _, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    avg = ends - (counts.to(torch.float64) - 1) / 2
    return avg[inverse]


def auc_ovr(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class one-vs-rest ROC AUC (NaN where a class is absent or alone)."""
    out = torch.full((num_classes,), float("nan"), dtype=torch.float64, device=scores.device)
    for c in range(num_classes):
        positive = labels == c
        n_pos = positive.sum()
        n_neg = len(labels) - n_pos
        ranks = _average_ranks(scores[:, c].to(torch.float64))
        auc = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg).clamp(min=1)
        out[c] = torch.where((n_pos > 0) & (n_neg > 0), auc, out[c])
    return out


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> torch.Tensor:
    conf, pred = probs.max(1)
    correct = (pred == labels).to(torch.float64)
    idx = torch.clamp((conf * bins).long(), max=bins - 1)
    count = torch.bincount(idx, minlength=bins).to(torch.float64)
    conf_sum = torch.zeros(bins, dtype=torch.float64, device=probs.device).index_add_(0, idx, conf.to(torch.float64))
    acc_sum = torch.zeros(bins, dtype=torch.float64, device=probs.device).index_add_(0, idx, correct)
    return (conf_sum - acc_sum).abs().sum() / max(len(labels), 1)


def summarize(cm: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """Flat dict of Python numbers (the one host sync of an evaluation)."""
    m = from_confusion(cm)
    auc = auc_ovr(probs, labels, len(classes))
    present = ~torch.isnan(auc)
    m["auc_macro"] = auc[present].mean() if present.any() else torch.tensor(float("nan"))
    m["per_class_auc"] = auc
    m["ece"] = expected_calibration_error(probs, labels)
    out = {}
    for key, value in m.items():
        value = value.detach().cpu()
        if key.startswith("per_class_"):
            for name, v in zip(classes, value.tolist()):
                out[f"{key[len('per_class_'):]}.{name}"] = v
        else:
            out[key] = float(value)
    out["n"] = int(cm.sum())
    return out
