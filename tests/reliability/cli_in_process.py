"""The command-line contract checked in the pytest worker: an entry module's `main(argv)` called
in-process, with what `python -m` would have written to stdout and stderr gathered into a
result that `broken.error_line` reads like a finished process.

A fresh `python -m engine.<cli>` costs seconds of interpreter and torch start-up before any
work; the entry modules do nothing in `__main__` but exit with main's status, so the status and
the `error:` line are main's. Tests whose behaviour needs a real process keep one: kill -9, a
live process holding a run's lock, a child filling the disk while wandb writes, and the whole
stderr of a process refusing an option (test_rel_config.py).
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

# What the subprocess runs show on stderr: broken.cli_env sets MEDTRAIN_LOG=WARNING, and
# engine/run/env.py setup_logging formats the records like this.
LOG_FORMAT = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


@dataclass
class Ran:
    """A finished in-process CLI call, shaped like subprocess.CompletedProcess for broken.error_line."""
    returncode: int
    stdout: str
    stderr: str


@contextmanager
def one_thread():
    """The subprocess runs' OMP_NUM_THREADS=1 (broken.cli_env): the run keeps the single torch
    thread (engine/run/env.py layout_cpu_threads), and the worker gets its own setting back."""
    import torch
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


def call(args, module: str = "engine.train") -> int:
    """`python -m module args` in this process, for fixtures without capfd; returns the status."""
    with one_thread():
        return importlib.import_module(module).main([str(a) for a in args])


@contextmanager
def logging_to_stderr():
    """The handler `python -m` gets from setup_logging (engine/run/env.py). In a pytest worker
    the root logger already holds pytest's capturing handlers, so basicConfig adds none there and
    the records would never reach stderr; this one does, in the data loader's forked workers too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(LOG_FORMAT)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def run_cli(capture, args, module: str = "engine.train") -> Ran:
    """`broken.run_cli` in-process. `capture` is the calling test's capfd (what is written to
    file descriptors 1 and 2, so the forked loader workers' lines are counted too) or capsys
    (Python's own streams, where no worker is forked: refusals, single-process runs)."""
    capture.readouterr()  # only this call's output
    with logging_to_stderr():
        status = call(args, module)
    out, err = capture.readouterr()
    return Ran(status, out, err)
