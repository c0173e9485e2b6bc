"""Whole runs: one compile per mode, the non-finite stop, SIGTERM -> resume, kill -9 mid-write."""
from __future__ import annotations

import logging
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
from engine_testkit import FAST, history
from tests.helpers import skip_report

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


def test_sigterm_saves_a_checkpoint_that_resume_finishes(tmp_path, caplog):
    # A real process: its signal handler and the exit status of `python -m` are under test. The
    # plan and the figures are not (each costs seconds here).
    out = tmp_path / "run"
    proc = _cli(FAST + ["--epochs", "4", "--out", str(out), "--run.report", "false", "--run.plan", "off"])
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
    with caplog.at_level(logging.INFO, logger="medtrain"):  # resuming needs no fresh process
        assert main(["--resume", str(out)]) == 0
    assert f"resuming {out} at epoch {state['epoch']} step {state['step']}" in caplog.text
    assert [h["epoch"] for h in history(out)] == [0, 1, 2, 3] and (out / "metrics.json").exists()


# Torch and the checkpoint code load once in a real process; each writer is a fork of it (nothing
# has run torch's thread pool before the fork) that this test's process tells to be killed.
WRITERS = """
import os, signal, sys, time
import torch
from engine.run import checkpoint

def write_forever(run_dir, fd):
    big = torch.zeros(16 * 2**20)  # 64 MB: each write takes long enough to be killed mid-way
    for version in range(1, 10**6):
        big[0] = version
        os.write(fd, b"%d\\n" % version)
        checkpoint.save(run_dir, {"version": version, "big": big, "check": big.sum()})

for attempt in range(int(sys.argv[2])):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: never returns into this loop, whatever happens
        try:
            os.close(read_end)
            write_forever(sys.argv[1], write_end)
        finally:
            os._exit(1)
    os.close(write_end)
    versions = os.fdopen(read_end)
    started = [int(versions.readline()) for _ in range(2 + attempt)]  # inside write number 2 + attempt
    time.sleep(0.02 * attempt)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    versions.close()
    print(started[-1], flush=True)
    sys.stdin.readline()  # the test has read the checkpoint: next attempt

# A timed kill mostly lands while torch serialises in memory. This one dies inside the file
# write itself, at a byte chosen here: the kernel kills a process whose file passes
# RLIMIT_FSIZE with SIGXFSZ (Python ignores it; the writer restores the default), and no
# handler runs, as under kill -9.
pid = os.fork()
if pid == 0:
    try:
        import io, resource
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        checkpoint.save(sys.argv[1], {"version": 100, "big": torch.full((2**20,), 100.0), "check": torch.tensor(100.0)})
        payload = {"version": 101, "big": torch.full((2**20,), 101.0), "check": torch.tensor(101.0)}
        serialised = io.BytesIO()
        torch.save(payload, serialised)
        resource.setrlimit(resource.RLIMIT_FSIZE, (serialised.getbuffer().nbytes // 2, resource.RLIM_INFINITY))
        checkpoint.save(sys.argv[1], payload)
    finally:
        os._exit(1)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    attempts = 3
    proc = subprocess.Popen([sys.executable, "-c", WRITERS, str(tmp_path), str(attempts)], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(attempts):
            line = proc.stdout.readline()
            assert line, proc.communicate(timeout=30)
            started = int(line)  # the version whose write was under way when the writer was killed
            saved = checkpoint.load(tmp_path)
            assert saved["version"] >= started - 1 >= 1
            assert float(saved["big"][0]) == saved["version"] and float(saved["check"]) == saved["version"]
            proc.stdin.write("next\n")
            proc.stdin.flush()
        assert int(proc.stdout.readline()) == -signal.SIGXFSZ  # died half-way through writing version 101
        saved = checkpoint.load(tmp_path)
        assert saved["version"] == 100 and float(saved["big"][0]) == 100 and float(saved["check"]) == 100
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
