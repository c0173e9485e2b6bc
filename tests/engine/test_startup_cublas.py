"""--train.deterministic: CUBLAS_WORKSPACE_CONFIG is in the environment before the run starts.

cuBLAS reads it when its first handle is made, so it must be set before anything in the process
can run a GPU matmul (the plan's calibration, the model build): at the entry point, right after
the options are parsed, not when the run seeds its generators.
"""
from __future__ import annotations

import os

import pytest

import engine.cv
import engine.run.runner
from engine import train as train_cli


@pytest.fixture
def no_cublas_config(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)


def _seen_at_entry(monkeypatch, target, name) -> dict:
    seen = {}

    def record(cfg, *args, **kwargs):
        seen["value"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        return {}

    monkeypatch.setattr(target, name, record)
    return seen


@pytest.mark.usefixtures("no_cublas_config")
def test_train_sets_it_before_the_runner_starts(monkeypatch):
    seen = _seen_at_entry(monkeypatch, engine.run.runner, "train")
    assert train_cli.main(["--data", "synthetic", "--train.deterministic", "--device", "cpu"]) == 0
    assert seen["value"] == ":4096:8"


@pytest.mark.usefixtures("no_cublas_config")
def test_cv_sets_it_before_the_first_fold(monkeypatch):
    seen = _seen_at_entry(monkeypatch, engine.cv, "cross_validate")
    assert engine.cv.main(["--folds", "2", "--data", "synthetic", "--train.deterministic", "--device", "cpu"]) == 0
    assert seen["value"] == ":4096:8"


@pytest.mark.usefixtures("no_cublas_config")
def test_a_run_that_is_not_deterministic_leaves_it_alone_and_a_user_value_is_kept(monkeypatch):
    seen = _seen_at_entry(monkeypatch, engine.run.runner, "train")
    assert train_cli.main(["--data", "synthetic", "--device", "cpu"]) == 0
    assert seen["value"] is None
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert train_cli.main(["--data", "synthetic", "--train.deterministic", "--device", "cpu"]) == 0
    assert seen["value"] == ":16:8"
