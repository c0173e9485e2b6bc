"""`--contend N`: the busy processes run while the block runs and never outlive it."""
from __future__ import annotations

import time

import psutil
import pytest

from bench.contend import busy


@pytest.mark.ci
def test_busy_processes_spin_during_the_block_and_end_after_it():
    with busy(2, seconds=60) as children:
        assert len(children) == 2
        procs = [psutil.Process(c.pid) for c in children]
        deadline = time.monotonic() + 20  # a loaded machine starts them slowly
        while time.monotonic() < deadline and min(p.cpu_times().user for p in procs) < 0.3:
            time.sleep(0.2)
        assert all(c.poll() is None for c in children)
        assert min(p.cpu_times().user for p in procs) >= 0.3  # each one burns CPU
    assert all(c.poll() is not None for c in children)


@pytest.mark.ci
def test_busy_processes_stop_by_themselves_when_the_time_is_up():
    with busy(1, seconds=0.5) as children:
        children[0].wait(timeout=30)  # bounded in time even if the benchmark never returned
        assert children[0].returncode == 0


@pytest.mark.ci
def test_zero_and_negative_counts():
    with busy(0) as children:
        assert children == []
    with pytest.raises(ValueError, match="--contend"):
        with busy(-1):
            pass
