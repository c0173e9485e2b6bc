"""Benchmark fixtures: where the data is, where artifacts go, which suites run where.

Markers: `ci` is the short CPU subset `make test` runs and compares with the committed
reference; `gpu` needs CUDA (skipped without it); `slow` takes minutes on the 2-core CPU.
Data is looked up in ../shared/data beside the checkout (the full sets), then in `.gpu/`
(the subset `make gpu-pack` carries to the GPU machine, where shared data is absent);
benchmarks that need it skip with the reason when neither is there.
"""
from __future__ import annotations

from common.startup import start

start()  # pytest's entry here (`pytest bench`): the start-up users get, before torch loads

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from bench.other_work import OtherWork  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDTRAIN_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    config.addinivalue_line("markers", "ci: the short CPU benchmark subset CI runs and compares")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: longer than a few seconds on the 2-core CPU")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _other_work(request):
    """Every benchmark's result says how many of its cores other processes held meanwhile
    (bench/other_work.py): bench.compare judges wall-clock ratios only on a quiet machine."""
    if "benchmark" not in request.fixturenames:
        yield
        return
    benchmark = request.getfixturevalue("benchmark")
    with OtherWork() as other:
        yield
    benchmark.extra_info["other_work"] = other.record()


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ.setdefault("MEDTRAIN_CACHE", str(tmp_path_factory.mktemp("cache")))
    os.environ.setdefault("WANDB_MODE", "disabled")
    yield


def first_existing(*candidates: Path) -> Path | None:
    return next((p for p in candidates if p.exists()), None)


@pytest.fixture
def ham_dir():
    found = first_existing(SHARED / "ham10000_224" / "labels.csv", REPO / ".gpu" / "ham_subset" / "labels.csv")
    if found is None:
        pytest.skip(f"HAM10000 JPEGs not found in .gpu/ham_subset or {SHARED / 'ham10000_224'}")
    return found.parent


@pytest.fixture
def dermamnist_npz():
    found = first_existing(SHARED / "dermamnist28.npz", REPO / ".gpu" / "dermamnist28.npz")
    if found is None:
        pytest.skip(f"dermamnist28.npz not found in .gpu/ or {SHARED}")
    return found


@pytest.fixture
def out_dir():
    """Artifacts (profiles, logs) go to $OUT when set (gpu-check), else a folder under runs/."""
    path = Path(os.environ.get("OUT") or REPO / "runs" / "bench")
    path.mkdir(parents=True, exist_ok=True)
    return path



@pytest.fixture
def jpeg_data() -> str:
    """HAM JPEGs where present, else the embedded synthetic JPEGs (each result's config says which)."""
    found = first_existing(SHARED / "ham10000_224" / "labels.csv", REPO / ".gpu" / "ham_subset" / "labels.csv")
    return str(found.parent) if found else "synthetic"
