"""Shared fixtures: the real data beside the checkout, tiny generated datasets, gpu skipping."""
from __future__ import annotations

import os
from pathlib import Path

from common.startup import start

start()  # the start-up every entry point makes, before torch loads (common/startup.py)

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.helpers import write_jpegs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDTRAIN_SHARED_DATA", REPO.parent / "shared" / "data"))
HAM = SHARED_DATA / "ham10000_224"
DERMAMNIST = SHARED_DATA / "dermamnist28.npz"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    # The synthetic dataset cache goes to a temp folder, never the user's home, in tests.
    os.environ.setdefault("MEDTRAIN_CACHE", str(tmp_path_factory.mktemp("cache")))
    os.environ.setdefault("WANDB_MODE", "disabled")
    yield


@pytest.fixture
def ham_dir():
    if not (HAM / "labels.csv").exists():
        pytest.skip(f"real HAM10000 data not found at {HAM}")
    return HAM


@pytest.fixture
def dermamnist_npz():
    if not DERMAMNIST.exists():
        pytest.skip(f"real DermaMNIST npz not found at {DERMAMNIST}")
    return DERMAMNIST


@pytest.fixture
def tiny_csv(tmp_path):
    return write_jpegs(tmp_path / "tiny", n=36)
