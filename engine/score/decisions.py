"""How scores become decisions: class-prior correction (logit adjustment) and a binary operating threshold.

Logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021): a model
trained on class prior pi scores log p(y|x) ~ f_y(x) + log pi_y; subtracting tau * log pi_y
removes the prior, and tau = 1 is Bayes-optimal for the balanced error. Two forms:
- as a loss (`--optim.logit_adjust tau`): training adds tau * log pi to the logits, so the raw
  logits learn the prior-free part (`loss_offset`, a device tensor built once: capture-safe);
- post hoc (`--eval.posthoc_adjust`, on by default for imbalanced data in the plan): after
  training, tau is chosen on the validation split for the selection metric from TAU_GRID
  (0 included, so it never does worse there), stored in the checkpoint (`decision`) and applied
  by the runner's test figures, engine.evaluate and engine.predict alike.
pi is the prior the model saw: the training split's class counts as the sampler draws them
(counts ** (1 - alpha) for `--sampler balanced`).

Before both, the scores are calibrated: a temperature fitted on the validation split
(`--eval.calibrate`, on by default; engine/score/temperature.py) is stored in the same `decision`
and applied first, so tau and the threshold are chosen on calibrated scores and every
consumer (`adjust`, `decide`) applies the three in the same order: temperature, prior, threshold.

A binary task with `--eval.target_sensitivity S` also stores a threshold on the positive class
(class index 1) chosen on validation as the highest that reaches sensitivity S; predict writes
the decision it gives. Metric keys are documented in docs/plan.md.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.score import temperature
from engine.score.metrics import bootstrap_indices, expected_calibration_error, from_confusion, summarize
from engine.score.screening import operating_point, screening_summary, threshold_for_sensitivity
from kernels.confusion import confusion_matrix

TAU_GRID = [round(0.1 * i, 1) for i in range(21)]  # 0 .. 2
UNCORRECTED = ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro")


def train_counts(ds) -> np.ndarray:
    """Images per class in the training split: the prior the sampler draws from."""
    return np.bincount(ds.train.labels, minlength=ds.num_classes)


def training_prior(counts, sampler_kind: str, alpha: float) -> np.ndarray:
    counts = np.maximum(np.asarray(counts, np.float64), 1.0)  # an absent class: the rarest possible, not log 0
    seen = counts ** (1.0 - alpha) if sampler_kind == "balanced" else counts
    return seen / seen.sum()


def loss_offset(cfg, counts, device: torch.device) -> torch.Tensor | None:
    """tau * log pi on the device for the logit-adjusted loss; None when the loss is plain."""
    if cfg.optim.logit_adjust <= 0:
        return None
    prior = training_prior(counts, cfg.sampler.kind, cfg.sampler.alpha)
    return torch.tensor(cfg.optim.logit_adjust * np.log(prior), dtype=torch.float32, device=device)


def calibrated(probs: torch.Tensor, decision: dict | None) -> torch.Tensor:
    """Probabilities at the stored temperature (1, unchanged, in checkpoints without one)."""
    return temperature.apply(probs, decision.get("temperature", 1.0)) if decision else probs


def adjust(probs: torch.Tensor, decision: dict | None) -> torch.Tensor:
    """Calibrated probabilities with tau * log pi taken out (renormalized); unchanged without a decision."""
    if not decision:
        return probs
    probs = calibrated(probs, decision)
    if not decision.get("tau"):
        return probs
    log_prior = torch.tensor(decision["log_prior"], dtype=torch.float32, device=probs.device)
    return (probs.float().clamp_min(1e-12).log() - decision["tau"] * log_prior).softmax(1)


def _score(probs: torch.Tensor, labels: torch.Tensor, metric: str) -> float:
    if metric == "auc_macro":  # ranks per class barely move with a per-class shift: nothing to tune
        return 0.0
    cm = confusion_matrix(labels, probs.argmax(1), probs.shape[1])
    return float(from_confusion(cm)[metric])  # sync point: once per grid value, after training


def fit_decision(cfg, counts, val_probs: torch.Tensor, val_labels: torch.Tensor) -> dict:
    """The decision rule stored in the checkpoint, chosen on the validation split."""
    prior = training_prior(counts, cfg.sampler.kind, cfg.sampler.alpha)
    decision = {"tau": 0.0, "log_prior": np.log(prior).tolist(), "metric": cfg.train.select,
                "loss_tau": cfg.optim.logit_adjust, "temperature": 1.0}
    if cfg.eval.calibrate:  # first: tau and the threshold see calibrated scores
        decision["temperature"], note = temperature.fit_softmax(val_probs, val_labels)
        if note:  # why T = 1 was kept: the log, metrics.json (`calibration.note`) and the report say it
            decision["temperature_note"] = note
    if cfg.eval.posthoc_adjust and len(val_labels):
        scores = [(_score(adjust(val_probs, decision | {"tau": t}), val_labels, cfg.train.select), -t) for t in TAU_GRID]
        best, neg_tau = max(scores)  # ties: the smallest tau, the least change
        decision |= {"tau": -neg_tau, "val_gain": best - scores[0][0]}
    if cfg.eval.target_sensitivity > 0 and val_probs.shape[1] == 2 and len(val_labels):
        p = adjust(val_probs, decision)[:, 1].cpu().numpy()
        decision |= {"threshold": threshold_for_sensitivity(val_labels.cpu().numpy(), p, cfg.eval.target_sensitivity),
                     "target_sensitivity": cfg.eval.target_sensitivity, "positive": 1}
    return decision


def decide(probs: torch.Tensor, decision: dict | None) -> torch.Tensor:
    """Predicted class per row: argmax of the corrected probabilities, or the stored threshold."""
    adjusted = adjust(probs, decision)
    if decision and decision.get("threshold") is not None:
        return (adjusted[:, 1] >= decision["threshold"]).long()
    return adjusted.argmax(1)


def summarize_decided(decision: dict | None, probs: torch.Tensor, labels: torch.Tensor, classes: list[str],
                      bootstrap: int = 0, uncalibrated: torch.Tensor | None = None) -> dict:
    """`summarize` of the calibrated, corrected scores, `uncorrected.*` (calibrated only) and
    `ece_uncalibrated` (the raw scores, or `uncalibrated` when given: an ensemble's mean raw
    probabilities) beside it, and screening figures for binary tasks."""
    num_classes = len(classes)
    adjusted = adjust(probs, decision)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=probs.device)
    confusion_matrix(labels, adjusted.argmax(1), num_classes, out=cm)
    out = summarize(cm, adjusted, labels, classes, bootstrap=bootstrap)
    out["confusion"] = cm.cpu().tolist()
    calibrated_only = calibrated(probs, decision)
    raw_cm = confusion_matrix(labels, calibrated_only.argmax(1), num_classes)
    raw = summarize(raw_cm, calibrated_only, labels, classes)
    out |= {f"uncorrected.{k}": raw[k] for k in UNCORRECTED}
    # Before calibration and correction: what the temperature bought (docs/engine.md)
    out["ece_uncalibrated"] = float(expected_calibration_error(uncalibrated if uncalibrated is not None else probs,
                                                               labels)) if len(labels) else float("nan")
    out["temperature"] = float(decision.get("temperature", 1.0)) if decision else 1.0
    out["prior_correction_tau"] = float(decision.get("tau", 0.0)) if decision else 0.0
    if num_classes == 2 and len(labels):
        y = labels.cpu().numpy()
        s = adjusted[:, 1].cpu().numpy()  # sync point: binary screening figures, after scoring
        idx = bootstrap_indices(len(y), bootstrap, "cpu").numpy() if bootstrap else None
        out |= screening_summary(y, s, idx)
        if decision and decision.get("threshold") is not None:
            out |= operating_point(y, s, decision["threshold"])
    return out
