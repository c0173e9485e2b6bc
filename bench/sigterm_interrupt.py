"""SIGTERM ends a program the way Ctrl-C does, so what it measured so far is still written.

The GPU check stops a step at its limit with SIGTERM (and SIGKILL a few seconds later). Python's
default for SIGTERM ends the process at once; as a KeyboardInterrupt, pytest still runs its
session finish (pytest-benchmark writes the JSON of the benchmarks already run, junitxml the
tests already run) and a CLI's own handler writes what it has.

- as a pytest plugin: `pytest -p bench.sigterm_interrupt ...`
- around a module: `python -m bench.sigterm_interrupt bench.profile [its options]`
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import runpy
import signal
import sys

import pytest


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum} (the GPU check's time limit)")


def install() -> None:
    signal.signal(signal.SIGTERM, _interrupt)


def pytest_configure(config) -> None:
    install()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    # The benchmark that was running when the signal came has no timings, and pytest-benchmark's
    # JSON writer fails on it (min() of nothing), losing the others: it is dropped first.
    bench_session = getattr(session.config, "_benchmarksession", None)
    if bench_session is not None:
        bench_session.benchmarks[:] = [b for b in bench_session.benchmarks if b]
    yield


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m bench.sigterm_interrupt MODULE [ARGS...]")
    install()
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
