"""Busy processes for contended benchmarks (`--contend N`): the same experiment on any machine.

A laptop or shared server is never idle. `busy(n, seconds)` keeps n other processes spinning
in pure Python (each holds one core whenever the scheduler gives it one) while the block runs,
for BOTH sides of a comparison, and ends them on exit. Each child also stops by itself after
`seconds`, so a killed benchmark never leaves spinners behind.
"""
from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextmanager
def busy(n: int, seconds: float = 1800.0):
    """Run the block with n spinning child processes (none when n == 0)."""
    if n < 0:
        raise ValueError(f"--contend takes a count of busy processes >= 0; got {n}")
    children = [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=float(seconds))],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for _ in range(n)]
    try:
        yield children
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait()
