"""The CLI under several processes: torchrun, a killed rank, a hung rank, resume on another world size.

Ranks are started the way torchrun starts them (RANK/LOCAL_RANK/WORLD_SIZE/MASTER_* in the
environment) so one of them can be killed or stopped on its own; torchrun itself would tear
the others down first and hide what the engine does when a peer disappears (as it does across
nodes, where each node has its own torchrun). They are forks of one warm interpreter
(tests/dist/warm_ranks.py: one torch import for both ranks, issue 25); the resume under
torchrun is a real `torchrun -m engine.train`, the one-process resume runs in this process.
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


@pytest.fixture(scope="module")
def rank_server():
    """One warm interpreter that forks the ranks of every run here (tests/dist/warm_ranks.py)."""
    # torch._dynamo: the first optimizer step imports it (~2 s), once here instead of in each rank.
    preload = ["torch", "torch._dynamo", "engine.run.runner", "engine.run.checkpoint"]
    # Its own session: the clean-up ends the server and any rank left, by group.
    server = subprocess.Popen([sys.executable, str(REPO / "tests/dist/warm_ranks.py"), json.dumps(preload)],
                              cwd=REPO, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert server.stdout.readline() == "ready\n", f"the rank server did not start (exit {server.poll()})"
        yield server
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)  # the server is not reaped yet: its group is ours
        except ProcessLookupError:
            pass
        server.wait()
        server.stdin.close()
        server.stdout.close()


class Ranks:
    """The ranks of one run, forked by the rank server: each is a real process the test signals
    by pid; the server reaps them and reports each exit status in a file."""

    def __init__(self, server: subprocess.Popen, npz: Path, out: Path, world: int = 2):
        self.dir = out.parent / f"{out.name}-ranks"
        self.dir.mkdir(parents=True)
        spec = {"module": "engine.train", "argv": _args(npz, out), "world": world, "dir": str(self.dir),
                "env": {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}}
        server.stdin.write(json.dumps(spec) + "\n")
        server.stdin.flush()
        pids = json.loads(server.stdout.readline())
        self.pids = [int(pids[str(rank)]) for rank in range(world)]

    def signal(self, rank: int, how: signal.Signals) -> None:
        os.kill(self.pids[rank], how)

    def returncode(self, rank: int) -> int | None:
        status = self.dir / f"rank{rank}.status"
        return int(status.read_text()) if status.exists() else None

    def wait(self, rank: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.returncode(rank) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.returncode(rank)

    def stderr(self, rank: int) -> str:
        return (self.dir / f"rank{rank}.err").read_text()

    def stop(self) -> None:
        """Ends the ranks still running (not reaped: their pids are still theirs)."""
        for rank in range(len(self.pids)):
            if self.returncode(rank) is None:
                self.signal(rank, signal.SIGKILL)
                self.wait(rank, timeout=30)


@pytest.fixture
def start_ranks(rank_server):
    started = []

    def start(npz: Path, out: Path) -> Ranks:
        started.append(Ranks(rank_server, npz, out))
        return started[-1]
    yield start
    for ranks in started:
        ranks.stop()


def _wait_for_checkpoint(ranks: Ranks, out: Path) -> None:
    deadline = time.time() + 240
    while not (out / "checkpoint.pt").exists():
        if ranks.returncode(0) is not None or time.time() > deadline:
            pytest.fail(f"no checkpoint appeared: {ranks.stderr(0)[-2000:]}")
        time.sleep(0.05)


def _fail_one_rank(ranks: Ranks, out: Path, how: signal.Signals) -> tuple[int | None, str, float]:
    _wait_for_checkpoint(ranks, out)  # epoch 1 is saved: the run is mid-way through epoch 2
    ranks.signal(1, how)
    t0 = time.time()
    code = ranks.wait(0, timeout=EXIT_WITHIN_S + 30)
    seconds = time.time() - t0
    ranks.stop()  # the stopped rank too, before anything resumes the run
    return code, ranks.stderr(0), seconds


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _history_epochs(out: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()]


def test_killed_rank_stops_the_other_with_one_line_then_resumes_under_torchrun(npz, tmp_path, start_ranks):
    out = tmp_path / "killed"
    code, stderr, seconds = _fail_one_rank(start_ranks(npz, out), out, signal.SIGKILL)
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


def test_hung_rank_times_out_then_resumes_on_one_process(npz, tmp_path, start_ranks, capsys):
    out = tmp_path / "hung"
    code, stderr, seconds = _fail_one_rank(start_ranks(npz, out), out, signal.SIGSTOP)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 3 and TIMEOUT_S * 0.8 < seconds < EXIT_WITHIN_S, (code, seconds, stderr[-2000:])
    assert "Traceback" not in stderr and len(errors) == 1 and f"timeout {TIMEOUT_S}s" in errors[0]

    # Another world size (1 divides the global batch 16): same steps per epoch, same order.
    # In this process: resuming needs no second process (the torchrun resume is tested above).
    from engine.train import main
    assert main(["--resume", str(out)]) == 0, capsys.readouterr().err[-3000:]
    assert _metrics(out)["world_size"] == 1 and _history_epochs(out) == list(range(EPOCHS))


def test_sigterm_to_every_rank_stops_all_at_one_agreed_step(npz, tmp_path, start_ranks):
    out = tmp_path / "preempted"
    ranks = start_ranks(npz, out)
    _wait_for_checkpoint(ranks, out)
    for rank in range(2):  # a scheduler's preemption: every rank gets the signal, at slightly different steps
        ranks.signal(rank, signal.SIGTERM)
    codes = [ranks.wait(rank, timeout=EXIT_WITHIN_S + 30) for rank in range(2)]
    stderrs = [ranks.stderr(rank) for rank in range(2)]
    assert codes == [1, 1], [err[-1500:] for err in stderrs]
    assert "state saved to" in stderrs[0] and "Traceback" not in stderrs[0] + stderrs[1]
    # The ranks agreed on the step (a log interval or the epoch end); resuming is tested above.
    state = torch.load(out / "checkpoint.pt", weights_only=True)["state"]
    assert state["step"] % LOG_INTERVAL == 0 and state["epoch"] >= 1
