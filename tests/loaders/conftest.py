"""Fixtures for the backend tests: a tiny JPEG dataset loaded as a run would load it."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from engine.options.config import parse_args
from loaders.datasets import load_dataset
from tests.helpers import write_jpegs

# FFCV (the one user of numba here) compiles its pipelines with numba, at LLVM -O3 by default.
# These tests check what the pipelines compute (order, masks, pixels), which the optimization
# level leaves alone, and -O0 costs well under half the CPU per compilation and in FFCV's import
# (issue 25). Set before numba loads; an explicit NUMBA_OPT wins (NUMBA_OPT=3: as users run).
os.environ.setdefault("NUMBA_OPT", "0")

BACKENDS = ["plain", "nvjpeg", "dali", "ffcv", "baseline"]


def needs(name: str):
    """Skip marker for optional backends whose package is not installed."""
    module = {"dali": "nvidia.dali", "ffcv": "ffcv"}.get(name)
    missing = module is not None and importlib.util.find_spec(module) is None
    return pytest.param(name, marks=pytest.mark.skipif(missing, reason=f"{module} not installed"))


ALL = [needs(n) for n in BACKENDS]


def _loaded(root):
    cfg = parse_args(["--data", str(root), "--batch-size", "8", "--device", "cpu", "--data.workers", "2"]).config
    return cfg, load_dataset(cfg.data), torch.device("cpu")


@pytest.fixture
def tiny(tiny_csv):
    """Its own copy per test: for tests that spoil files or change the config."""
    return _loaded(tiny_csv)


@pytest.fixture(scope="module")
def tiny_shared(tmp_path_factory):
    """The same dataset as `tiny`, written once per module, for tests that only read it (issue 25:
    an FFCV .beton is written once per dataset, and loaders built on it can be shared)."""
    return _loaded(write_jpegs(tmp_path_factory.mktemp("tiny") / "tiny", n=36))


REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
