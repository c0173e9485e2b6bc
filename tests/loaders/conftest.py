"""Fixtures for the backend tests: a tiny JPEG dataset loaded as a run would load it."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from engine.options.config import parse_args
from loaders.datasets import load_dataset

BACKENDS = ["plain", "nvjpeg", "dali", "ffcv", "baseline"]


def needs(name: str):
    """Skip marker for optional backends whose package is not installed."""
    module = {"dali": "nvidia.dali", "ffcv": "ffcv"}.get(name)
    missing = module is not None and importlib.util.find_spec(module) is None
    return pytest.param(name, marks=pytest.mark.skipif(missing, reason=f"{module} not installed"))


ALL = [needs(n) for n in BACKENDS]


@pytest.fixture
def tiny(tiny_csv):
    cfg = parse_args(["--data", str(tiny_csv), "--batch-size", "8", "--device", "cpu", "--data.workers", "2"]).config
    return cfg, load_dataset(cfg.data), torch.device("cpu")


REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
