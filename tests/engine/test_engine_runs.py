"""Whole runs: one compile per mode, the non-finite stop, SIGTERM -> resume, kill -9 mid-write."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from engine.run import build as build_module
from engine.run import checkpoint, loop, runner
from engine.train import main
from engine_testkit import FAST, history, skip_report

REPO = Path(__file__).resolve().parents[2]


def test_compiled_run_compiles_train_and_eval_once_each(tmp_path, monkeypatch):
    """A counting backend sees every graph dynamo hands over: a recompile (new batch shape,
    padded eval batch, a guard on the step counter...) or a graph break would add one."""
    from torch._dynamo.utils import counters
    compiled = []

    def counting_backend(gm, example_inputs):
        compiled.append("train" if torch.is_grad_enabled() else "eval")
        return gm.forward

    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(loop, "COMPILE_BACKEND", counting_backend)
    skip_report(monkeypatch)
    assert main(FAST + ["--epochs", "2", "--compile", "--train.ema", "0.9", "--out", str(tmp_path)]) == 0
    assert sorted(compiled) == ["eval", "train"], compiled
    assert not counters["graph_break"], dict(counters["graph_break"])
    torch._dynamo.reset()


class NanHead(nn.Module):
    def forward(self, x):
        return x * float("nan")


def test_run_stops_after_max_nonfinite_in_a_row(tmp_path, monkeypatch, capsys, caplog):
    build = build_module.build_model_for
    monkeypatch.setattr(build_module, "build_model_for", lambda *a, **k: nn.Sequential(build(*a, **k), NanHead()))
    skip_report(monkeypatch)
    code = main(FAST + ["--epochs", "3", "--train.max_nonfinite", "3", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: stopping: 3 non-finite losses in a row at epoch 1 step 3" in err, err
    assert "epoch 1 step 3: 3 non-finite losses skipped this epoch, 3 in a row (stop at 3)" in caplog.text
    state = checkpoint.load(tmp_path)["state"]  # the state at the stop is kept for inspection
    assert (state["epoch"], state["step"]) == (0, 3)
    assert int(state["trainer"]["acc"]["nonfinite"]) == 3


def _cli(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(REPO), MEDTRAIN_LOG="INFO")
    return subprocess.Popen([sys.executable, "-m", "engine.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_sigterm_saves_a_checkpoint_that_resume_finishes(tmp_path):
    out = tmp_path / "run"
    proc = _cli(FAST + ["--epochs", "4", "--out", str(out), "--run.report", "false"])  # figures: not under test
    deadline = time.time() + 240
    while not (out / "history.jsonl").exists():  # first epoch done: the run is mid-training
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stderr
    assert "SIGTERM received: state saved" in stderr and "Traceback" not in stderr, stderr
    state = checkpoint.load(out)["state"]
    assert state["epoch"] in (1, 2) and len(history(out)) == state["epoch"]  # finished epochs only
    resumed = _cli(["--resume", str(out)])
    stdout, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr
    assert f"resuming {out} at epoch {state['epoch']} step {state['step']}" in stderr
    assert [h["epoch"] for h in history(out)] == [0, 1, 2, 3] and (out / "metrics.json").exists()


WRITER = """
import sys, torch
from engine.run import checkpoint
big = torch.zeros(16 * 2**20)  # 64 MB: each write takes long enough to be killed mid-way
for version in range(1, 10**6):
    big[0] = version
    print(version, flush=True)
    checkpoint.save(sys.argv[1], {"version": version, "big": big, "check": big.sum()})
"""


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, text=True)
        started = [int(proc.stdout.readline()) for _ in range(2 + attempt)]  # inside write number 2 + attempt
        time.sleep(0.02 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        saved = checkpoint.load(tmp_path)
        assert saved["version"] >= started[-1] - 1 >= 1
        assert float(saved["big"][0]) == saved["version"] and float(saved["check"]) == saved["version"]
