"""Exact resume: an interrupted-and-resumed run matches an uninterrupted one, bit for bit."""
from __future__ import annotations

import shutil

import pytest

from engine.run import checkpoint
from engine.train import main
from engine_testkit import FAST, history, metrics, stop_after, stop_never
from tests.helpers import skip_figures

# EMA, mixup, cutmix, dropout and clipping all draw or carry state that a resume must restore.
ARGS = FAST + ["--epochs", "4", "--seed", "3", "--train.deterministic", "true", "--train.ema", "0.9",
               "--train.mixup", "0.4", "--train.cutmix", "1.0", "--optim.clip_grad", "2.0"]
COMPARED = ("train.loss", "train.accuracy", "train.nonfinite", "lr", "val.accuracy", "val.balanced_accuracy",
            "val.auc_macro", "train.class_histogram")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    with pytest.MonkeyPatch.context() as monkeypatch:
        skip_figures(monkeypatch)  # drawn after the figures compared here are written
        assert main(ARGS + ["--out", str(out)]) == 0
    return out


def _steps_per_epoch(run_dir) -> int:
    state = checkpoint.load(run_dir)["state"]
    return int(state["trainer"]["step_counter"]) // state["epoch"]


def _stopped(out, at_step: int):
    with pytest.MonkeyPatch.context() as monkeypatch:
        skip_figures(monkeypatch)
        stop_after(monkeypatch, at_step)
        assert main(ARGS + ["--out", str(out)]) == 1  # stopped, state saved: not finished
    return out


@pytest.fixture(scope="module")
def stopped_at_epoch_two(straight, tmp_path_factory):
    """Stopped at the end of epoch 2, not resumed: each test resumes its own copy."""
    return _stopped(tmp_path_factory.mktemp("stopped") / "run", 2 * _steps_per_epoch(straight))


def _resumed(run_dir, monkeypatch, resume_from=None):
    skip_figures(monkeypatch)
    stop_never(monkeypatch)
    assert main(["--resume", str(resume_from or run_dir)]) == 0
    return run_dir


def _assert_same(a, b):
    ha, hb = history(a), history(b)
    assert [h["epoch"] for h in ha] == [h["epoch"] for h in hb] == [0, 1, 2, 3]
    for ra, rb in zip(ha, hb):
        assert {k: ra[k] for k in COMPARED} == {k: rb[k] for k in COMPARED}, ra["epoch"]
    ma, mb = metrics(a), metrics(b)
    for key in ("test.accuracy", "test.balanced_accuracy", "test.f1_macro", "test.auc_macro", "val.balanced_accuracy",
                "epochs", "best_epoch"):
        assert ma[key] == mb[key], key


def test_stop_at_epoch_two_then_resume_matches_straight_run(straight, stopped_at_epoch_two, tmp_path, monkeypatch):
    out = shutil.copytree(stopped_at_epoch_two, tmp_path / "run")
    _assert_same(straight, _resumed(out, monkeypatch))


def test_stop_mid_epoch_then_resume_matches_straight_run(straight, tmp_path, monkeypatch):
    steps = _steps_per_epoch(straight)
    out = _stopped(tmp_path / "run", steps + steps // 2 + 1)
    _assert_same(straight, _resumed(out, monkeypatch))


def test_resume_accepts_the_checkpoint_file_as_well_as_its_folder(straight, stopped_at_epoch_two, tmp_path,
                                                                   monkeypatch):
    out = shutil.copytree(stopped_at_epoch_two, tmp_path / "run")
    _resumed(out, monkeypatch, resume_from=out / checkpoint.NAME)  # the file, not the folder
    _assert_same(straight, out)


def test_resume_on_a_busier_machine_matches_straight_run(straight, stopped_at_epoch_two, tmp_path, monkeypatch):
    """Spinning OpenMP waits (torch imported before the start-up call) size the pool by free
    cores; a deterministic run must not, or a resume beside other work reduces in another order."""
    from common import cpu_wait
    from engine.run import env
    monkeypatch.setitem(cpu_wait._state, "short_waits", False)
    monkeypatch.setattr(env, "busy_cores", lambda cores, seconds=0.2: len(cores) - 1)
    out = shutil.copytree(stopped_at_epoch_two, tmp_path / "run")
    _assert_same(straight, _resumed(out, monkeypatch))
