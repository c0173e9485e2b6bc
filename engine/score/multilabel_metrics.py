"""Metrics of multi-label findings, as scikit-learn defines them (tests compare with it).

Per finding k (probabilities p[:, k], truth y[:, k] in {0, 1}):
- `auc.<k>`: ROC AUC (Mann-Whitney with tie-averaged ranks = sklearn's roc_auc_score);
  `auc_macro`: their mean over findings with both classes present (the ChestMNIST figure;
  sklearn's roc_auc_score(y, p, average="macro") when every finding has both);
- `ap.<k>`: average precision (sklearn's average_precision_score: sum over distinct
  thresholds of (R_n - R_{n-1}) P_n); `map`: their mean (average="macro");
- at the finding's decision threshold t_k (chosen on validation: `fit_thresholds`; 0.5 before
  one exists): `sensitivity.<k>`, `specificity.<k>`, `precision.<k>`, `f1.<k>`,
  `balanced_accuracy.<k>`, `threshold.<k>`, `support.<k>` (positives).
Whole-task keys, each over the decisions at t_k:
- `balanced_accuracy`: the mean over findings of (sensitivity + specificity) / 2;
- `accuracy`: exact match (every finding right; sklearn's accuracy_score on multilabel);
- `hamming_accuracy`: the share of (image, finding) decisions right (1 - hamming_loss);
- `f1_macro`, `precision_macro`, `recall_macro`: sklearn's average="macro" over findings;
- `log_loss`: mean binary cross-entropy over images and findings (clipped at 1e-15).
Bootstrap 95% intervals (`*_ci_low/high`) for auc_macro and balanced_accuracy resample images.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.score import temperature
from engine.score.metrics import _average_ranks, _nanmean, _safe_div, bootstrap_indices, flat_on_host, resample_weights
from engine.score.screening import roc_points

THRESHOLD_RULES = ("youden", "f1", "half")


# ----------------------------------------------------------------------------- ranking figures

def auc_per_finding(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(K,) ROC AUC, NaN where a finding has only one class."""
    pos = (labels > 0.5).T.to(torch.float64)                               # (K, n)
    ranks = _average_ranks(probs.T.to(torch.float64))
    n_pos = pos.sum(1)
    n_neg = labels.shape[0] - n_pos
    auc = ((ranks * pos).sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg).clamp(min=1)
    return torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, float("nan")))


def ap_per_finding(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(K,) average precision, NaN where a finding has no positive."""
    out = []
    for k in range(probs.shape[1]):
        s, order = probs[:, k].to(torch.float64).sort(descending=True)
        y = (labels[order, k] > 0.5).to(torch.float64)
        last_of_tie = torch.ones_like(s, dtype=torch.bool)
        last_of_tie[:-1] = s[1:] != s[:-1]
        tp, fp = y.cumsum(0)[last_of_tie], (1 - y).cumsum(0)[last_of_tie]
        recall = _safe_div(tp, y.sum().expand_as(tp))
        ap = (recall.diff(prepend=recall.new_zeros(1)) * tp / (tp + fp)).sum()
        out.append(torch.where(y.sum() > 0, ap, torch.full_like(ap, float("nan"))))
    return torch.stack(out) if out else probs.new_zeros(0, dtype=torch.float64)


# ----------------------------------------------------------------------------- decisions

def _threshold(y: np.ndarray, s: np.ndarray, rule: str) -> float:
    if rule == "half" or y.min() == y.max():
        return 0.5
    fpr, tpr, thresholds = roc_points(y, s)
    if rule == "youden":
        gain = tpr[1:] - fpr[1:]
    else:  # f1 at each threshold: tp = tpr * P, fp = fpr * N
        p, n = y.sum(), len(y) - y.sum()
        tp, fp = tpr[1:] * p, fpr[1:] * n
        gain = 2 * tp / np.maximum(2 * tp + fp + (p - tp), 1e-12)
    return float(thresholds[1:][int(np.argmax(gain))])  # ties: the highest threshold, the fewest positive calls


def fit_thresholds(probs: torch.Tensor, labels: torch.Tensor, rule: str) -> list[float]:
    """One decision threshold per finding, chosen on these (validation) scores."""
    p = probs.detach().double().cpu().numpy()  # sync point: once, after training
    y = (labels.detach().cpu().numpy() > 0.5).astype(np.int64)
    return [_threshold(y[:, k], p[:, k], rule) for k in range(p.shape[1])] if len(y) else [0.5] * p.shape[1]


def decide_findings(probs: torch.Tensor, thresholds: list[float] | None) -> torch.Tensor:
    """(n, K) 0/1 decisions at the findings' thresholds (0.5 without any)."""
    t = torch.tensor(thresholds if thresholds is not None else [0.5] * probs.shape[1],
                     dtype=probs.dtype, device=probs.device)
    return (probs >= t).long()


# ----------------------------------------------------------------------------- summary

def _at_decisions(pred: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    truth = (labels > 0.5).long()
    tp = (pred * truth).sum(0).double()
    fp = (pred * (1 - truth)).sum(0).double()
    fn = ((1 - pred) * truth).sum(0).double()
    tn = ((1 - pred) * (1 - truth)).sum(0).double()
    sens, spec = _safe_div(tp, tp + fn), _safe_div(tn, tn + fp)
    prec = _safe_div(tp, tp + fp)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    both = (tp + fn > 0) & (tn + fp > 0)
    bal = (sens + spec) / 2
    return {"per_class_sensitivity": sens, "per_class_specificity": spec, "per_class_precision": prec,
            "per_class_f1": f1, "per_class_balanced_accuracy": bal, "per_class_support": tp + fn,
            "balanced_accuracy": bal[both].mean() if both.any() else tp.sum() * 0,
            "accuracy": (pred == truth).all(1).double().mean(),
            "hamming_accuracy": (pred == truth).double().mean(),
            "f1_macro": f1.mean(), "precision_macro": prec.mean(), "recall_macro": sens.mean()}


def _bootstrap(probs, labels, pred, resamples: int) -> dict[str, torch.Tensor]:
    """Intervals of auc_macro and balanced_accuracy over resampled images (same draws as single-label)."""
    from engine.score.metrics import weighted_auc_ovr
    idx = bootstrap_indices(len(labels), resamples, labels.device)
    weights = resample_weights(idx, len(labels)).double()
    truth = (labels > 0.5).long()
    # weighted_auc_ovr scores "class 0" of a one-column problem: positives labelled 0
    auc = torch.stack([weighted_auc_ovr(probs[:, k:k + 1], 1 - truth[:, k], 1, weights)[:, 0]
                       for k in range(probs.shape[1])], 1)
    hit = (pred == truth).double()
    pos = weights @ truth.double()
    neg = weights.sum(1, keepdim=True) - pos
    sens = torch.where(pos > 0, (weights @ (hit * truth)) / pos.clamp(min=1e-12), torch.nan)
    spec = torch.where(neg > 0, (weights @ (hit * (1 - truth))) / neg.clamp(min=1e-12), torch.nan)
    q = torch.tensor([0.025, 0.975], dtype=torch.float64, device=labels.device)
    out = {}
    for name, values in (("auc_macro", _nanmean(auc)), ("balanced_accuracy", _nanmean((sens + spec) / 2))):
        values = values[~torch.isnan(values)]
        low, high = torch.quantile(values, q) if len(values) else (q * float("nan")).unbind()
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = low, high
    return out


def summarize_findings(probs: torch.Tensor, labels: torch.Tensor, classes: list[str],
                       thresholds: list[float] | None = None, bootstrap: int = 0) -> dict:
    """Flat dict of Python numbers (one host sync), keys as the module docstring lists."""
    labels = labels.to(probs.device)
    pred = decide_findings(probs, thresholds)
    m = _at_decisions(pred, labels)
    auc, ap = auc_per_finding(probs, labels), ap_per_finding(probs, labels)
    m |= {"auc_macro": _nanmean(auc), "per_class_auc": auc, "map": _nanmean(ap), "per_class_ap": ap,
          "per_class_threshold": torch.tensor(thresholds or [0.5] * len(classes), dtype=torch.float64)}
    p = probs.double().clamp(1e-15, 1 - 1e-15)
    y = (labels > 0.5).double()
    m["log_loss"] = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    if bootstrap and len(labels):
        m |= _bootstrap(probs, labels, pred, bootstrap)
    out = flat_on_host(m, classes)  # sync point: evaluation end
    out["n"] = int(len(labels))
    out["findings"] = len(classes)
    out["confusion"] = confusions(pred, labels).cpu().tolist()
    return out


def confusions(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(K, 2, 2) per finding at its decisions: [[tn, fp], [fn, tp]] (sklearn's multilabel_confusion_matrix)."""
    truth = (labels > 0.5).long()
    cell = truth * 2 + pred
    counts = (cell.unsqueeze(-1) == torch.arange(4, device=pred.device)).sum(0)   # (K, 4)
    return counts.view(-1, 2, 2)


def calibrated_findings(probs: torch.Tensor, decision: dict | None) -> torch.Tensor:
    """Probabilities at the stored per-finding temperatures (unchanged in checkpoints without them)."""
    return temperature.apply(probs, decision["temperatures"], multilabel=True) if decision and decision.get(
        "temperatures") else probs


def fit_findings_decision(cfg, val_probs: torch.Tensor, val_labels: torch.Tensor) -> dict:
    """The multi-label decision stored in the checkpoint: a temperature per finding fitted on
    validation (--eval.calibrate), then a threshold per finding chosen on the calibrated
    validation scores (--eval.finding_threshold); evaluate and predict apply both, in that order."""
    rule = cfg.eval.finding_threshold
    decision = {"task": "multilabel", "tau": 0.0, "rule": rule, "metric": cfg.train.select}
    if cfg.eval.calibrate and len(val_labels) > 1:
        decision["temperatures"] = temperature.fit_temperature(val_probs, val_labels, multilabel=True).tolist()
    decision["thresholds"] = fit_thresholds(calibrated_findings(val_probs, decision), val_labels, rule)
    return decision
