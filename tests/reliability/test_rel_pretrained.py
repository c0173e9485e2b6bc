"""Pretrained weights: the match is said, and weights of another architecture are refused."""
from __future__ import annotations

import functools
import logging

import pytest
import torch

from common.errors import ConfigError
from models.registry import build_model


@functools.lru_cache(maxsize=None)
def _state(name: str, classes: int) -> dict:
    """A fresh model's weights, built once per architecture for the file (only read: saved below)."""
    return build_model(name, classes, 32).state_dict()


def _saved(tmp_path, name, classes=5, wrap=None):
    state = _state(name, classes)
    if wrap == "module.":  # saved from a DDP wrapper
        state = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "model":  # a training checkpoint
        state = {"model": state, "epoch": 3}
    path = tmp_path / f"{name}.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("source, target", [("resnet18", "efficientnet_b0"), ("resnet18", "resnet50"),
                                            ("resnet9", "resnet18"), ("seedcnn", "resnet9_small"),
                                            ("mlp", "seedcnn")])
def test_weights_of_another_architecture_are_refused(tmp_path, source, target):
    path = _saved(tmp_path, source)
    with pytest.raises(ConfigError, match=rf"--model\.pretrained .*{source}\.pt: only \d+ of this model's \d+ "
                                          r"parameter tensors match by name and shape \(fewer than half\)"):
        build_model(target, 7, 32, pretrained=str(path))


@pytest.mark.parametrize("wrap", [None, "module.", "model"])
def test_same_architecture_loads_and_says_how_many(tmp_path, caplog, wrap):
    path = _saved(tmp_path, "resnet18", classes=5, wrap=wrap)
    with caplog.at_level(logging.INFO, logger="medtrain.models"):
        model = build_model("resnet18", 7, 32, pretrained=str(path))  # another class count: head skipped
    total = len(model.state_dict())
    params = len(list(model.named_parameters()))
    assert f"{total - 2} of {total} tensors loaded ({params - 2} of {params} parameters)" in caplog.text
    assert "not loaded: fc.weight, fc.bias" in caplog.text
