"""Model registry and builder: `build_model(name, num_classes, image_size, ...)`.

A new model is one file with a `build(num_classes, image_size, in_channels, dropout)` function
plus one line in MODELS. The builder loads local pretrained weights (never from the network),
and returns the module in channels_last memory format.
"""
from __future__ import annotations

import importlib
import logging

import torch
from torch import nn

from common.errors import ConfigError

log = logging.getLogger("medtrain.models")

MODELS = {
    "seedcnn": "models.seedcnn:build",
    "mlp": "models.mlp:build",
    "resnet9": "models.resnet9:build",
    "resnet9_small": "models.resnet9:build_small",
    "resnet18": "models.torchvision_models:resnet18",
    "resnet50": "models.torchvision_models:resnet50",
    "efficientnet_b0": "models.torchvision_models:efficientnet_b0",
}


def load_pretrained(model: nn.Module, path: str) -> None:
    """Load a local state_dict: tensors matching by name and shape are loaded (a classifier head
    of another class count is skipped), the count is logged, and weights that match fewer than
    half of the model's parameter tensors are refused: they belong to another architecture,
    and training from them would be training from scratch under a pretrained label."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"--model.pretrained {path}: no such file") from None
    except Exception as exc:
        raise ConfigError(f"--model.pretrained {path}: not a weights file torch.load accepts with weights_only=True ({type(exc).__name__})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ConfigError(f"--model.pretrained {path}: holds a {type(state).__name__}, not a state_dict")
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}  # DDP / compile
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and hasattr(v, "shape") and own[k].shape == v.shape}
    params = [k for k, _ in model.named_parameters()]
    matched = sum(k in usable for k in params)
    if matched * 2 < len(params):
        raise ConfigError(f"--model.pretrained {path}: only {matched} of this model's {len(params)} parameter "
                          "tensors match by name and shape (fewer than half); these weights are for another "
                          "architecture or model size")
    model.load_state_dict(usable, strict=False)
    log.info("pretrained weights %s: %d of %d tensors loaded (%d of %d parameters)%s", path, len(usable), len(own),
             matched, len(params), "; not loaded: " + ", ".join(k for k in params if k not in usable)[:200]
             if matched < len(params) else "")


def pretrained_source(model: nn.Module, name: str, pretrained: str) -> None:
    """`imagenet`: the library's own weights and cache (models/pretrained.py); anything else: a local file."""
    if pretrained == "imagenet":
        from models.pretrained import imagenet_state_dict, load_matching
        load_matching(model, imagenet_state_dict(name), f"--model.pretrained imagenet ({name})")
    else:
        load_pretrained(model, pretrained)


def build_model(name: str, num_classes: int, image_size: int, *, in_channels: int = 3,
                dropout: float = 0.0, pretrained: str = "") -> nn.Module:
    if name.startswith("timm/"):  # any timm model by name; timm loads its own pretrained weights
        from models import timm_models
        model = timm_models.build_timm(name[len("timm/"):], num_classes, image_size, in_channels, dropout,
                                  pretrained=pretrained == "imagenet")
        if pretrained and pretrained != "imagenet":
            load_pretrained(model, pretrained)
        return model.to(memory_format=torch.channels_last)
    if name not in MODELS:
        import difflib
        close = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"--model {name}: unknown model{hint}; known: {', '.join(MODELS)}")
    module, fn = MODELS[name].split(":")
    model = getattr(importlib.import_module(module), fn)(num_classes, image_size, in_channels, dropout)
    if pretrained:
        pretrained_source(model, name, pretrained)
    return model.to(memory_format=torch.channels_last)
