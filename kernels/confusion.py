"""Confusion matrix on the device: the source of every classification metric.

Integer scatter-add (deterministic, unlike float atomics), rows = true class, columns =
predicted. Rows with label < 0 (the padding of a fixed-shape last batch) are ignored.
Matrices from several batches or ranks merge by addition (`merge_across_ranks`: all_reduce
SUM). Kept in torch: it is one scatter-add launch over a batch of labels, which a Triton kernel
could only match (bench/kernels.py times it against the `torch.bincount` reference).
"""
from __future__ import annotations

import torch


def confusion_reference(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    valid = labels >= 0
    idx = labels[valid] * num_classes + preds[valid]
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """Adds into `out` (int64, C x C) when given, so a static buffer can accumulate without sync."""
    valid = labels >= 0
    idx = (labels.clamp(min=0) * num_classes + preds).view(-1)
    if out is None:
        out = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=labels.device)
    out.view(-1).scatter_add_(0, idx, valid.view(-1).to(torch.int64))
    return out


def merge_across_ranks(cm: torch.Tensor) -> torch.Tensor:
    """Sum of every rank's matrix, in place (integer sums: exact and order-independent)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(cm, op=dist.ReduceOp.SUM)
    return cm
