"""Test-time augmentation: the softmax averaged over the 8 symmetries of the square (4 rotations
by 90 degrees, each with and without a horizontal flip, which together also give the vertical
flip). Lesions and scans have no canonical orientation, so every view is a fair look."""
from __future__ import annotations

import torch
from torch import nn


def dihedral_views(images: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations/flips of a square NCHW batch, kept channels_last for the model."""
    views = []
    for k in range(4):
        rotated = torch.rot90(images, k, dims=(2, 3))
        views += [rotated, rotated.flip(3)]
    return [v.contiguous(memory_format=torch.channels_last) for v in views]


class TTA(nn.Module):
    """Wraps a classifier: log of the mean softmax over the 8 views, so a softmax of its
    output is exactly the averaged probability and callers need not know TTA is on. Multi-label
    findings (`multilabel`): the mean of each finding's sigmoid, returned as its logit."""

    def __init__(self, model: nn.Module, multilabel: bool = False):
        super().__init__()
        self.model, self.multilabel = model, multilabel

    def forward(self, images: torch.Tensor, *meta: torch.Tensor) -> torch.Tensor:
        # meta (metadata fusion) describes the patient, not the pixels: the same for every view
        if self.multilabel:
            probs = torch.stack([self.model(v, *meta).float().sigmoid() for v in dihedral_views(images)]).mean(0)
            return torch.logit(probs.clamp(1e-7, 1 - 1e-7))
        probs = torch.stack([self.model(v, *meta).float().softmax(1) for v in dihedral_views(images)]).mean(0)
        return probs.clamp_min(1e-12).log()
