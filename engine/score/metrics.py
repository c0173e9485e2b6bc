"""Classification metrics from the device confusion matrix and score buffer.

Everything is computed with torch on the device where the buffers live; `summarize` moves
only the final scalars to the host (one sync, at evaluation end). AUC is one-vs-rest per
class via the Mann-Whitney rank statistic with tie-averaged ranks, which equals the
trapezoidal ROC area scikit-learn computes; macro AUC averages classes present in the labels.
Bootstrap intervals resample the test rows with replacement, all resamples at once on the
device (a batch of index rows), and take the 2.5 and 97.5 percentiles.
"""
from __future__ import annotations

import torch

BOOTSTRAP_SEED = 20261123  # fixed: the same predictions always give the same interval


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b > 0, a / b.clamp(min=1e-12), torch.zeros_like(a))


def _nanmean(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    present = ~torch.isnan(x)
    return torch.where(present, x, torch.zeros_like(x)).sum(dim) / present.sum(dim)  # NaN when none present


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
    # sklearn's macro averages run over every class seen in the labels or the predictions
    seen = present | (predicted > 0)
    tn = total - support - predicted + tp
    specificity = _safe_div(tn, tn + (predicted - tp))
    return {
        "accuracy": _safe_div(tp.sum(), total),
        "balanced_accuracy": recall[present].mean() if present.any() else total * 0,
        "f1_macro": f1[seen].mean(),
        "precision_macro": precision[seen].mean(),
        "recall_macro": recall[seen].mean(),
        "f1_weighted": _safe_div((f1 * support).sum(), support.sum()),
        "precision_weighted": _safe_div((precision * support).sum(), support.sum()),
        "recall_weighted": _safe_div((recall * support).sum(), support.sum()),
        "per_class_sensitivity": recall,
        "per_class_specificity": specificity,
        "per_class_precision": precision,
        "per_class_f1": f1,
        "per_class_support": support,
    }


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks along the last dim, ties sharing their average rank (works batched)."""
    x = x.contiguous()
    ordered = x.sort(-1).values
    below = torch.searchsorted(ordered, x, right=False)
    up_to = torch.searchsorted(ordered, x, right=True)
    return (below + up_to + 1).to(torch.float64) / 2


def auc_ovr(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-vs-rest ROC AUC per class, NaN where a class is absent or alone.

    Batched: scores (..., n, C) and labels (..., n) give (..., C), so bootstrap resamples
    are one call.
    """
    ranks = _average_ranks(scores.to(torch.float64).transpose(-1, -2))          # (..., C, n)
    positive = labels.unsqueeze(-2) == torch.arange(num_classes, device=labels.device).unsqueeze(-1)
    n_pos = positive.sum(-1).to(torch.float64)
    n_neg = labels.shape[-1] - n_pos
    auc = ((ranks * positive).sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg).clamp(min=1)
    return torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, float("nan")))


def calibration_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15):
    """(count, mean confidence, accuracy) per equal-width confidence bin: the reliability diagram."""
    conf, pred = probs.max(1)
    correct = (pred == labels).to(torch.float64)
    idx = torch.clamp((conf * bins).long(), max=bins - 1)
    count = torch.bincount(idx, minlength=bins).to(torch.float64)
    zeros = torch.zeros(bins, dtype=torch.float64, device=probs.device)
    conf_sum = zeros.index_add(0, idx, conf.to(torch.float64))
    acc_sum = zeros.index_add(0, idx, correct)
    return count, _safe_div(conf_sum, count), _safe_div(acc_sum, count)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> torch.Tensor:
    """Sum over bins of |accuracy - confidence| weighted by the bin's share of samples."""
    count, conf, acc = calibration_bins(probs, labels, bins)
    return (count * (conf - acc).abs()).sum() / max(len(labels), 1)


def log_loss(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the true class (sklearn's clipping at 1e-15)."""
    p = probs.to(torch.float64)
    p = p / p.sum(1, keepdim=True)
    return -p.gather(1, labels[:, None]).clamp(1e-15, 1 - 1e-15).log().mean()


def bootstrap_indices(n: int, resamples: int, device, seed: int = BOOTSTRAP_SEED) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(seed)  # CPU generator: same draws on any device
    return torch.randint(0, n, (resamples, n), generator=generator).to(device)


def resample_weights(idx: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) multiplicity of each row in each resample: every bootstrap metric is a weighted one."""
    return torch.zeros(len(idx), n, dtype=torch.float32, device=idx.device).scatter_add_(
        1, idx, torch.ones(idx.shape, dtype=torch.float32, device=idx.device))  # counts: exact in fp32


def weighted_auc_ovr(scores: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     weights: torch.Tensor) -> torch.Tensor:
    """One-vs-rest AUC (B, C) for B weightings of the same rows.

    Each class is sorted once; a positive earns the weight of the negatives scored below
    it plus half of those tied with it (Mann-Whitney), so no resample is ever sorted.
    """
    out = []
    for c in range(num_classes):
        ordered, order = scores[:, c].to(torch.float64).sort()
        w = weights[:, order]
        positive = labels[order] == c
        _, group, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
        neg_upto = (w * ~positive).cumsum(1)[:, counts.cumsum(0) - 1]         # (B, groups): score <= group
        neg_tied = neg_upto.diff(dim=1, prepend=torch.zeros_like(neg_upto[:, :1]))
        credit = (neg_upto - neg_tied / 2)[:, group]
        w_pos = w * positive
        n_pos = w_pos.sum(1, dtype=torch.float64)
        n_neg = w.sum(1, dtype=torch.float64) - n_pos
        auc = (w_pos * credit).sum(1, dtype=torch.float64) / (n_pos * n_neg).clamp(min=1)
        out.append(torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, float("nan"))))
    return torch.stack(out, 1)


def bootstrap_scores(probs: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced accuracy and macro AUC of each resample (each row of `idx`)."""
    weights = resample_weights(idx, len(labels))
    one_hot = torch.nn.functional.one_hot(labels, num_classes).to(weights.dtype)     # (n, C)
    support = (weights @ one_hot).double()
    hits = (weights @ (one_hot * (probs.argmax(1) == labels).unsqueeze(1))).double()
    recall = torch.where(support > 0, hits / support.clamp(min=1), torch.full_like(hits, float("nan")))
    return _nanmean(recall), _nanmean(weighted_auc_ovr(probs, labels, num_classes, weights))


def bootstrap_intervals(probs: torch.Tensor, labels: torch.Tensor, num_classes: int,
                        resamples: int = 1000) -> dict[str, torch.Tensor]:
    idx = bootstrap_indices(len(labels), resamples, labels.device)
    bal, auc = bootstrap_scores(probs, labels, num_classes, idx)
    q = torch.tensor([0.025, 0.975], dtype=torch.float64, device=labels.device)
    out = {}
    for name, values in (("balanced_accuracy", bal), ("auc_macro", auc)):
        values = values[~torch.isnan(values)]
        low, high = torch.quantile(values, q) if len(values) else (q * float("nan")).unbind()
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = low, high
    return out


def flat_on_host(m: dict[str, torch.Tensor], classes: list[str]) -> dict:
    """Device figures as flat Python numbers, `per_class_<kind>` spread into `<kind>.<class>`:
    one host transfer at evaluation end."""
    host = {key: value.detach().cpu() for key, value in m.items()}  # sync point: evaluation end
    out = {}
    for key, value in host.items():
        if key.startswith("per_class_"):
            for name, v in zip(classes, value.tolist()):
                out[f"{key[len('per_class_'):]}.{name}"] = int(v) if key == "per_class_support" else v
        else:
            out[key] = float(value)
    return out


def summarize(cm: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, classes: list[str],
              bootstrap: int = 0) -> dict:
    """Flat dict of Python numbers (the one host sync of an evaluation).

    `bootstrap` > 0 adds 95% intervals (`*_ci_low`, `*_ci_high`) for balanced accuracy and
    macro AUC from that many resamples; the runner asks for them on the test split.
    """
    m = from_confusion(cm)
    auc = auc_ovr(probs, labels, len(classes))
    m["auc_macro"] = _nanmean(auc)
    m["per_class_auc"] = auc
    m["ece"] = expected_calibration_error(probs, labels)
    m["log_loss"] = log_loss(probs, labels) if len(labels) else torch.tensor(float("nan"))
    if bootstrap and len(labels):
        m |= bootstrap_intervals(probs, labels, len(classes), bootstrap)
    out = flat_on_host(m, classes)
    out["n"] = int(cm.sum())
    return out
