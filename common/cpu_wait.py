"""OpenMP threads that spin briefly, then sleep, while they wait: the CPU path's defence against shared cores.

PyTorch's CPU kernels run in GNU OpenMP parallel regions. By default libgomp makes a thread
that reaches the end of its share of a region spin (busy-wait, ~300,000 iterations) for its
peers. When another process holds one of the cores, the peer it waits for is descheduled, so
the waiting thread burns its own time slice spinning and each tiny region of the per-sample
CPU augmentation costs a scheduler slice instead of microseconds: with one busy process the
tensor loader fell by an order of magnitude, and sleeping waits brought it back.

Fully passive slowed the idle engine, so a short spin (SPIN_COUNT) before sleeping is the
compromise chosen (the measurements: bench/results/cpu-contention.md). libgomp reads the policy
once, when torch loads it, so this must run before the first `import torch`: the start-up call
every entry point makes first (common/startup.py). A policy the user set (OMP_WAIT_POLICY or
GOMP_SPINCOUNT) is kept. Imports nothing heavy.
"""
from __future__ import annotations

import os
import sys
import warnings

# libgomp's busy-wait before a waiting thread sleeps: most of the idle speed and most of the
# contended speed kept (bench/results/cpu-contention.md has the figures behind the choice).
SPIN_COUNT = 3000

# Whether waits in this process's OpenMP pool are short (a bounded spin, then sleep): None until decided.
_state: dict[str, bool | None] = {"short_waits": None}


def sleep_while_waiting() -> bool:
    """Ask libgomp for sleeping waits unless torch is already loaded or the user chose a policy.
    Returns whether waiting threads will sleep (what engine/run/env.py sizes the thread pool by)."""
    if _state["short_waits"] is None:
        spin = os.environ.get("GOMP_SPINCOUNT")
        user_policy = os.environ.get("OMP_WAIT_POLICY", "").strip().lower()
        if spin is not None:  # libgomp lets it override the policy; ours, inherited by a child process, is short too
            _state["short_waits"] = spin_is_short(spin)
        elif user_policy:
            _state["short_waits"] = user_policy == "passive"
        elif "torch" in sys.modules:  # too late: libgomp has read its environment already
            _state["short_waits"] = False
            warnings.warn("torch was imported before medtrain's start-up, so OpenMP waits keep spinning (slow "
                          "on a shared CPU); call common.startup.start() before importing torch or set "
                          f"GOMP_SPINCOUNT={SPIN_COUNT} (common/startup.py)", RuntimeWarning, stacklevel=3)
        else:
            # A short spin, then sleep: a peer that is running arrives within the spin (idle speed
            # kept), a descheduled one costs SPIN_COUNT iterations instead of a time slice.
            os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
            _state["short_waits"] = True
    return bool(_state["short_waits"])


def spin_is_short(value: str) -> bool:
    """Whether a GOMP_SPINCOUNT value (libgomp's syntax: a count with an optional k/M/G/T suffix,
    or "infinite") spins no longer than ours before sleeping. A process started by a medtrain
    process (a pytest-xdist worker, a sweep's runs) inherits SPIN_COUNT: read as spinning, it
    would make the child size its threads by the momentary load (engine/run/env.py)."""
    text = value.strip().lower()
    scale = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}.get(text[-1:], 1)
    digits = text[:-1] if scale > 1 else text
    return digits.isdigit() and int(digits) * scale <= SPIN_COUNT


def waits_sleep() -> bool:
    """Whether OpenMP waits sleep in this process (decided by the first `sleep_while_waiting`)."""
    return sleep_while_waiting()


def available_core_ids() -> list[int]:
    """The cores this process may run on, by number (its affinity mask, which containers and
    taskset narrow), not the machine's that os.cpu_count() counts."""
    try:
        return sorted(os.sched_getaffinity(0)) or [0]
    except (AttributeError, OSError):  # macOS, Windows: no affinity API
        return list(range(max(1, os.cpu_count() or 1)))


def available_cores() -> int:
    """How many cores this process may run on (`available_core_ids`)."""
    return len(available_core_ids())
