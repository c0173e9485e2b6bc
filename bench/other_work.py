"""How much of this process's cores other processes kept busy while a benchmark ran.

The committed references (bench/results/reference-*.json) were measured on an idle machine. A
ratio of an engine that uses every core against a baseline that uses fewer falls when a
neighbour takes a core, with no change in the code (bench/compare.py has the figures). So every
benchmark records the other work beside it (bench/conftest.py), and bench.compare judges its
ratios only when that work was negligible.

Other work = busy time of the cores this process may run on (/proc/stat per CPU, steal
included: a hypervisor's neighbour slows us too) minus the CPU time of this process and its
children (the DataLoader workers, the contended benchmarks' own spinners), over wall time.
"""
from __future__ import annotations

import time

import psutil

from bench.record import cpu_seconds
from common.cpu_wait import available_core_ids


def _busy_seconds(cores: list[int]) -> float:
    per_cpu = psutil.cpu_times(percpu=True)
    busy = 0.0
    for core in cores:
        if core < len(per_cpu):
            t = per_cpu[core]
            busy += t.user + t.nice + t.system + sum(getattr(t, f, 0.0) for f in ("irq", "softirq", "steal"))
    return busy


def _own_seconds() -> float:
    """This process and its reaped children (bench.record.cpu_seconds), plus its live
    descendants with what they reaped."""
    total = cpu_seconds()
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:  # ended between the listing and the read: in cpu_seconds() once reaped, else lost
            pass
    return total


class OtherWork:
    """`with OtherWork() as other: ...` then `other.record()`: the cores others held, on average."""

    def __enter__(self) -> OtherWork:
        self.cores = available_core_ids()
        self._start = (time.monotonic(), _busy_seconds(self.cores), _own_seconds())
        return self

    def __exit__(self, *exc) -> bool:
        wall0, busy0, own0 = self._start
        wall = max(time.monotonic() - wall0, 1e-9)
        own = _own_seconds() - own0
        self.own_cores = own / wall
        self.cores_held = max(0.0, (_busy_seconds(self.cores) - busy0 - own) / wall)
        self.seconds = wall
        return False

    def record(self) -> dict:
        return {"cores_held": round(self.cores_held, 3), "own_cores": round(self.own_cores, 3), "cores": len(self.cores),
                "share": round(self.cores_held / len(self.cores), 3), "seconds": round(self.seconds, 1)}
