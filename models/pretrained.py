"""Where pretrained weights come from: a local file, or "imagenet" through the library's own cache.

`imagenet` for the torchvision models goes through torchvision's weights API
(`get_model_weights(name).DEFAULT`) and torch.hub's cache, `$TORCH_HOME/hub/checkpoints/<file>`
(default ~/.cache/torch); a timm model (`--model timm/<name>`) goes through timm, which reads
the Hugging Face hub cache (`$HF_HOME/hub`, models/timm_models.py). Nothing here downloads when
the file is cached; without a network and without the file, one ConfigError names the file and
the folder to put it in. Layers whose shape differs from the checkpoint's (the classifier, the
small-image stem of models/torchvision_models.py) keep their fresh initialisation.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from common.errors import ConfigError

TORCHVISION_IMAGENET = ("resnet18", "resnet50", "efficientnet_b0")
MIN_MATCHED = 0.5  # fewer matching tensors than this share means the weights are for another model


def torch_cache_file(url: str) -> Path:
    """Where torch.hub keeps (and looks for) the file of `url`: $TORCH_HOME/hub/checkpoints/<name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def imagenet_state_dict(name: str) -> dict:
    if name not in TORCHVISION_IMAGENET:
        raise ConfigError(f"--model.pretrained imagenet: no ImageNet weights for {name}; models with them: "
                          f"{', '.join(TORCHVISION_IMAGENET)} and any timm/<name>")
    from torchvision.models import get_model_weights
    weights = get_model_weights(name).DEFAULT
    cached = torch_cache_file(weights.url)
    try:  # a cached file is read as is; otherwise torch.hub downloads it to exactly that path
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # URLError, socket timeouts, HTTP errors: all mean "not here and not reachable"
        raise ConfigError(f"--model.pretrained imagenet: {name} weights are not cached and could not be downloaded "
                          f"({type(exc).__name__}); put {cached.name} (from {weights.url}) at {cached}") from None


def load_matching(model: nn.Module, state: dict, source: str) -> int:
    """Copy every tensor whose name and shape match; returns how many did. Refuses a near-total mismatch."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < MIN_MATCHED * len(own):
        raise ConfigError(f"{source}: only {len(usable)} of the model's {len(own)} tensors match its names and shapes")
    model.load_state_dict(usable, strict=False)
    return len(usable)
