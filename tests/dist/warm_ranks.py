"""Ranks as forks of one warm interpreter: real processes, one torch import between them all.

`python tests/dist/warm_ranks.py PRELOAD` (a JSON list of modules) does what every
`python -m MODULE` would do first (the start-up call, then importing torch and the heavy
modules in PRELOAD), then serves requests, one JSON line each on stdin (module, argv, world,
env, dir): for each it forks one child per rank, from the same untouched state. Each child
takes its rank's environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_* as torchrun sets them), sends its stdout and
stderr to `dir/rank<r>.out|.err` and runs MODULE as `python -m` does (runpy, `__main__`). It then
ends the way that process would: SystemExit or an uncaught exception leave through the
interpreter's normal exit (traceback, finalization), and the module's own `os._exit` stays one.
The parent answers each request with the children's pids as one JSON line, reaps them and
writes each exit status (negative: the signal, as subprocess reports it) to
`dir/rank<r>.status` as it comes. It runs no torch op itself, so every fork starts clean.

Why: each fresh `python -m engine.train` costs ~3 s of torch import and ~2 s of optimizer and
engine imports before any work; two ranks per scenario paid that twice (issue 25). Signals,
a kill -9, a stopped rank and gloo between the ranks are as real as before. What a fresh
interpreter reads at its start (GOMP_SPINCOUNT, OMP_NUM_THREADS) is the server's own
environment, which the test sets, the same for every rank; a request's env adds what the
module reads when it runs (MASTER_ADDR, MASTER_PORT).
"""
from __future__ import annotations

from common.startup import start

start()  # as each entry module does first, before torch loads libgomp

import importlib
import json
import os
import runpy
import select
import sys


def _run_rank(spec: dict, rank: int) -> None:
    """In the child: become rank `rank` and run the module; never returns to the launcher's loop."""
    sys.stdin.close()  # the requests are the server's
    os.environ.update(spec.get("env", {}))
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(spec["world"])})
    for fd, suffix in ((1, "out"), (2, "err")):
        os.dup2(os.open(os.path.join(spec["dir"], f"rank{rank}.{suffix}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.argv = [spec["module"], *spec["argv"]]
    runpy.run_module(spec["module"], run_name="__main__", alter_sys=True)
    sys.exit(0)  # the module returned: `python -m` would exit 0 here too


def _write_status(folder: str, rank: int, code: int) -> None:
    path = os.path.join(folder, f"rank{rank}.status")
    with open(path + ".tmp", "w") as fh:
        fh.write(str(code))
    os.replace(path + ".tmp", path)  # the test polls for the file: it must appear whole


def _start(spec: dict, children: dict) -> None:
    pids = {}
    for rank in range(spec["world"]):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_rank(spec, rank)  # raises SystemExit (or the module's exception) in the child
        pids[rank] = pid
        children[pid] = (spec["dir"], rank)
    print(json.dumps(pids), flush=True)


def _reap(children: dict) -> None:
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        if pid in children:
            _write_status(*children.pop(pid), os.waitstatus_to_exitcode(status))


def main(preload: list[str]) -> int:
    for name in preload:
        importlib.import_module(name)
    children: dict[int, tuple[str, int]] = {}
    print("ready", flush=True)
    while True:
        if select.select([sys.stdin], [], [], 0.05)[0]:
            line = sys.stdin.readline()
            if not line:  # no more requests: end once every rank has ended (the test's clean-up may kill them)
                while children:
                    pid, status = os.wait()
                    _write_status(*children.pop(pid), os.waitstatus_to_exitcode(status))
                return 0
            _start(json.loads(line), children)
        _reap(children)


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
