"""The CLI under several processes: torchrun, a killed rank, a hung rank, resume on another world size.

Ranks are started the way torchrun starts them (RANK/LOCAL_RANK/WORLD_SIZE/MASTER_* in the
environment) so one of them can be killed or stopped on its own; torchrun itself would tear
the others down first and hide what the engine does when a peer disappears (as it does across
nodes, where each node has its own torchrun).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 8
# A dead peer is seen at the next collective (a socket error) and a hung one after TIMEOUT_S;
# the slack covers an epoch-end evaluation in between and process teardown on 2 busy cores.
EXIT_WITHIN_S = TIMEOUT_S + 40
EPOCHS = 4
LOG_INTERVAL = 2


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """A small MedMNIST-style file: no JPEG decoding, so start-up is the import only."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"

    def split(n):
        y = rng.integers(0, 3, n)
        x = (rng.integers(0, 80, (n, 16, 16, 3)) + 60 * y[:, None, None, None]).astype(np.uint8)
        return x, y.reshape(-1, 1)

    # Enough training rows that the epochs after the first checkpoint outlast the kill on an idle machine.
    parts = {name: split(n) for name, n in (("train", 640), ("val", 37), ("test", 41))}
    np.savez(path, **{f"{k}_{kind}": v for k, (x, y) in parts.items() for kind, v in (("images", x), ("labels", y))})
    return path


def _args(npz: Path, out: Path) -> list[str]:
    return ["--data", str(npz), "--device", "cpu", "--epochs", str(EPOCHS), "--model", "mlp", "--batch-size", "16",
            "--out", str(out), "--train.progress", "off", "--train.log_interval", str(LOG_INTERVAL), "--dist.timeout_s", str(TIMEOUT_S),
            "--run.report", "false"]  # the figures are not under test here


def _env(**extra) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONPATH=str(REPO), **extra)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ranks(npz: Path, out: Path, world: int = 2) -> list[subprocess.Popen]:
    port = str(_free_port())
    return [subprocess.Popen([sys.executable, "-m", "engine.train", *_args(npz, out)], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world),
                                      MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
            for r in range(world)]


def _wait_for_checkpoint(procs, out: Path) -> None:
    deadline = time.time() + 240
    while not (out / "checkpoint.pt").exists():
        if procs[0].poll() is not None or time.time() > deadline:
            for p in procs:
                p.kill()
            pytest.fail(f"no checkpoint appeared: {procs[0].communicate()[1][-2000:]}")
        time.sleep(0.05)


def _fail_one_rank(npz: Path, out: Path, how: signal.Signals) -> tuple[int, str, float]:
    procs = _start_ranks(npz, out)
    _wait_for_checkpoint(procs, out)  # epoch 1 is saved: the run is mid-way through epoch 2
    procs[1].send_signal(how)
    t0 = time.time()
    try:
        _, stderr = procs[0].communicate(timeout=EXIT_WITHIN_S + 30)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        stderr = procs[0].communicate()[1]
    seconds = time.time() - t0
    procs[1].kill()
    procs[1].communicate()
    return procs[0].returncode, stderr, seconds


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _history_epochs(out: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()]


def test_killed_rank_stops_the_other_with_one_line_then_resumes_under_torchrun(npz, tmp_path):
    out = tmp_path / "killed"
    code, stderr, seconds = _fail_one_rank(npz, out, signal.SIGKILL)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 3 and seconds < EXIT_WITHIN_S, (code, seconds, stderr[-2000:])
    assert "Traceback" not in stderr and len(errors) == 1
    assert "another process failed or stopped answering" in errors[0] and f"--resume {out}" in errors[0]

    # Acceptance 1 and 3: the same run continues from its last checkpoint under torchrun.
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "engine.train", "--resume", str(out)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = _metrics(out)
    assert metrics["world_size"] == 2 and metrics["epochs"] == EPOCHS
    assert _history_epochs(out) == list(range(EPOCHS))  # rank 0 alone wrote: each epoch once


def test_hung_rank_times_out_then_resumes_on_one_process(npz, tmp_path):
    out = tmp_path / "hung"
    code, stderr, seconds = _fail_one_rank(npz, out, signal.SIGSTOP)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 3 and TIMEOUT_S * 0.8 < seconds < EXIT_WITHIN_S, (code, seconds, stderr[-2000:])
    assert "Traceback" not in stderr and len(errors) == 1 and f"timeout {TIMEOUT_S}s" in errors[0]

    # Another world size (1 divides the global batch 16): same steps per epoch, same order.
    done = subprocess.run([sys.executable, "-m", "engine.train", "--resume", str(out)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _metrics(out)["world_size"] == 1 and _history_epochs(out) == list(range(EPOCHS))


def test_sigterm_to_every_rank_stops_all_at_one_agreed_step(npz, tmp_path):
    out = tmp_path / "preempted"
    procs = _start_ranks(npz, out)
    _wait_for_checkpoint(procs, out)
    for p in procs:  # a scheduler's preemption: every rank gets the signal, at slightly different steps
        p.send_signal(signal.SIGTERM)
    results = [p.communicate(timeout=EXIT_WITHIN_S + 30) for p in procs]
    assert [p.returncode for p in procs] == [1, 1], [err[-1500:] for _, err in results]
    assert "state saved to" in results[0][1] and "Traceback" not in results[0][1] + results[1][1]
    # The ranks agreed on the step (a log interval or the epoch end); resuming is tested above.
    state = torch.load(out / "checkpoint.pt", weights_only=True)["state"]
    assert state["step"] % LOG_INTERVAL == 0 and state["epoch"] >= 1
