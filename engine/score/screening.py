"""Screening figures of a binary task, from the positive class's scores (NumPy, host side, after scoring).

- `pauc_above_tpr(y, s, 0.8)`: the ISIC 2024 metric: the area under the ROC curve restricted to
  TPR >= 0.8, i.e. the integral over TPR in [0.8, 1] of (1 - FPR), range [0, 0.2]. The ISIC
  code computes it as the partial AUC (FPR <= 0.2) of the problem with labels and scores
  negated, adding one interpolated point at the boundary; this is the same area.
- `sensitivity_at_specificity(y, s, 0.9)`: the best TPR among thresholds with specificity >= 0.9;
  `specificity_at_sensitivity` likewise. Both use only thresholds that exist (the ROC's steps).
- `screening_summary`: those figures with bootstrap 95% intervals over the same resamples.
"""
from __future__ import annotations

import numpy as np

SPECIFICITIES = (0.90, 0.95)
SENSITIVITIES = (0.90, 0.95)


def roc_points(y: np.ndarray, s: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) with a (0, 0) start and one point per distinct score, as sklearn's
    roc_curve(drop_intermediate=False); `w` weights rows (bootstrap multiplicities)."""
    w = np.ones(len(y)) if w is None else w
    order = np.argsort(-s, kind="mergesort")
    s, y, w = s[order], y[order].astype(bool), w[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(w * y)[last_of_tie]
    fp = np.cumsum(w * ~y)[last_of_tie]
    tpr = np.r_[0.0, tp / max(tp[-1], 1e-12)]
    fpr = np.r_[0.0, fp / max(fp[-1], 1e-12)]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def pauc_above_tpr(y: np.ndarray, s: np.ndarray, min_tpr: float = 0.8, w: np.ndarray | None = None) -> float:
    """ISIC 2024's computation: negate labels and scores, so TPR >= min_tpr becomes FPR <= 1 - min_tpr,
    add the curve's point at that FPR by linear interpolation, and take the trapezoid area."""
    if len(np.unique(y)) < 2:
        return float("nan")
    max_fpr = 1 - min_tpr
    fpr, tpr, _ = roc_points(1 - np.asarray(y), -np.asarray(s, dtype=np.float64), w)
    stop = int(np.searchsorted(fpr, max_fpr, "right"))
    x = np.r_[fpr[:stop], max_fpr]
    y_ = np.r_[tpr[:stop], np.interp(max_fpr, fpr[stop - 1:stop + 1], tpr[stop - 1:stop + 1])]
    return float(np.trapezoid(y_, x))


def _sens_at_spec(fpr, tpr, specificity: float) -> float:
    return float(tpr[fpr <= 1 - specificity + 1e-12].max())


def _spec_at_sens(fpr, tpr, sensitivity: float) -> float:
    return float((1 - fpr[tpr >= sensitivity - 1e-12]).max())


def sensitivity_at_specificity(y, s, specificity: float, w=None) -> float:
    fpr, tpr, _ = roc_points(y, s, w)
    return _sens_at_spec(fpr, tpr, specificity)


def specificity_at_sensitivity(y, s, sensitivity: float, w=None) -> float:
    fpr, tpr, _ = roc_points(y, s, w)
    return _spec_at_sens(fpr, tpr, sensitivity)


def _figures(y, s, w=None) -> dict[str, float]:
    out = {"pauc_tpr80": pauc_above_tpr(y, s, 0.8, w)}
    fpr, tpr, _ = roc_points(y, s, w)  # one curve for the four operating points
    for sp in SPECIFICITIES:
        out[f"sensitivity_at_specificity{round(sp * 100)}"] = _sens_at_spec(fpr, tpr, sp)
    for se in SENSITIVITIES:
        out[f"specificity_at_sensitivity{round(se * 100)}"] = _spec_at_sens(fpr, tpr, se)
    return out


def screening_summary(y: np.ndarray, s: np.ndarray, bootstrap_idx: np.ndarray | None = None) -> dict[str, float]:
    """The figures, plus `<name>_ci_low/_ci_high` (2.5/97.5 percentiles) when resample indices are given."""
    if len(np.unique(y)) < 2:
        return {k: float("nan") for k in _figures(np.array([0, 1]), np.array([0.0, 1.0]))}
    out = _figures(y, s)
    if bootstrap_idx is not None and len(bootstrap_idx):
        draws = {k: [] for k in out}
        for idx in bootstrap_idx:
            w = np.bincount(idx, minlength=len(y)).astype(np.float64)
            if w[y == 1].sum() == 0 or w[y == 0].sum() == 0:
                continue
            for k, v in _figures(y, s, w).items():
                draws[k].append(v)
        for k, v in draws.items():
            low, high = np.percentile(v, [2.5, 97.5]) if v else (float("nan"), float("nan"))
            out[f"{k}_ci_low"], out[f"{k}_ci_high"] = float(low), float(high)
    return out


def threshold_for_sensitivity(y: np.ndarray, s: np.ndarray, target: float) -> float:
    """The highest score threshold (predict positive when s >= t) whose sensitivity on (y, s) reaches target."""
    positives = np.sort(s[y == 1])[::-1]
    if len(positives) == 0:
        return 0.5
    k = int(np.ceil(target * len(positives)))
    return float(positives[max(k, 1) - 1])


def operating_point(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    decide = s >= threshold
    pos, neg = y == 1, y == 0
    return {"operating.threshold": float(threshold),
            "operating.sensitivity": float(decide[pos].mean()) if pos.any() else float("nan"),
            "operating.specificity": float((~decide[neg]).mean()) if neg.any() else float("nan")}
