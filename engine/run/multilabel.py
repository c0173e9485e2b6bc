"""Multi-label findings in the engine: the loss, the step's counts and the training prior.

Labels are an N x K 0/1 float matrix (loaders/multilabel.py); a padded or undecodable row is
all PAD_LABEL (-1) and counts nowhere. The loss is a sigmoid binary cross-entropy per finding
(each finding its own yes/no question), its positives weighted by `pos_weight` = negatives /
positives of that finding under the training prior (the sampler's draws, as the model sees
them), so a rare finding's few positives weigh as much as its many negatives. Everything here
runs on the device with fixed shapes: no host sync, nothing a captured graph would refuse.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from common.constants import PAD_LABEL


def finding_loss(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None,
                 smoothing: float = 0.0) -> torch.Tensor:
    """Mean sigmoid BCE over the real rows and all findings (padded rows masked)."""
    valid = (labels[:, :1] != PAD_LABEL).to(torch.float32)           # (B, 1)
    target = labels.clamp(min=0).to(torch.float32)
    if smoothing > 0:  # towards 1/2: the binary form of label smoothing
        target = target * (1 - smoothing) + smoothing / 2
    per = F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pos_weight, reduction="none")
    return (per * valid).sum() / (valid.sum() * labels.shape[1]).clamp(min=1)


def finding_counts(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(seen, correct), each 2K int64: per finding its positives then its negatives; correct at
    the 0.5 decision (logit > 0) gives sensitivity and specificity counts."""
    pred = logits > 0
    rows = valid.unsqueeze(1)
    pos = (labels > 0.5) & rows
    neg = (labels == 0) & rows
    seen = torch.cat([pos.sum(0), neg.sum(0)])
    correct = torch.cat([(pos & pred).sum(0), (neg & ~pred).sum(0)])
    return seen, correct


def finding_confusion(labels: torch.Tensor, probs: torch.Tensor, out: torch.Tensor) -> None:
    """Add each finding's 2x2 confusion at 0.5 into `out` (K, 2, 2): [truth, decision]."""
    valid = (labels[:, :1] != PAD_LABEL)
    truth = (labels > 0.5).long()
    pred = (probs >= 0.5).long()
    cell = truth * 2 + pred                                            # (B, K) in 0..3
    one_hot = (cell.unsqueeze(-1) == torch.arange(4, device=labels.device)) & valid.unsqueeze(-1)
    out.add_(one_hot.sum(0).view(-1, 2, 2))


def training_prevalence(labels: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Each finding's share of positives in the training draws (`weights`: the sampler's per-image
    weights, None for uniform draws)."""
    y = (np.asarray(labels) > 0.5).astype(np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
    return (w[:, None] * y).sum(0) / max(w.sum(), 1e-12)


def pos_weight(cfg, labels: np.ndarray, device: torch.device) -> torch.Tensor | None:
    """negatives / positives per finding under the training prior; None with --optim.pos_weight none.
    A finding without positives keeps weight 1 (nothing to balance)."""
    if cfg.optim.pos_weight == "none":
        return None
    from loaders.multilabel import rarest_finding_weights
    weights = rarest_finding_weights(np.asarray(labels), cfg.sampler.alpha) if cfg.sampler.kind == "balanced" else None
    p = training_prevalence(labels, weights)
    w = np.where(p > 0, (1 - p) / np.maximum(p, 1e-12), 1.0)
    return torch.tensor(w, dtype=torch.float32, device=device)
