"""Metadata fusion: image features and an embedding of tabular columns, joined before the classifier.

`fuse(backbone, meta_dim, num_classes)` takes any registry model, turns its last Linear layer
(the classifier) into an identity so the model returns its penultimate features, embeds the
metadata vector with a small MLP, and classifies the concatenation. The fused model is called
`model(images, meta)`; the loaders' `MetaLoader` supplies meta row-aligned with the images.
Works with every registered model because each ends in a Linear classifier.
"""
from __future__ import annotations

import torch
from torch import nn

from common.errors import ConfigError


def _last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    found = None
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found = (parent, name, child)
    if found is None:
        raise ConfigError("--model.metadata: this model has no Linear classifier to fuse metadata before")
    return found


class MetadataFusion(nn.Module):
    def __init__(self, backbone: nn.Module, meta_dim: int, num_classes: int, embed_dim: int = 32,
                 dropout: float = 0.1):
        super().__init__()
        parent, name, classifier = _last_linear(backbone)
        setattr(parent, name, nn.Identity())  # the backbone now returns its features
        self.backbone = backbone
        self.embed = nn.Sequential(nn.Linear(meta_dim, embed_dim), nn.ReLU(inplace=True),
                                   nn.Linear(embed_dim, embed_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(classifier.in_features + embed_dim, num_classes))

    def forward(self, images: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        # Under autocast the features may be bf16/fp16; the embedding follows their dtype.
        return self.head(torch.cat([features, self.embed(meta).to(features.dtype)], dim=1))


def fuse(backbone: nn.Module, meta_dim: int, num_classes: int, dropout: float = 0.1) -> MetadataFusion:
    return MetadataFusion(backbone, meta_dim, num_classes, dropout=dropout)
