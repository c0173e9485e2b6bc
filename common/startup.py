"""Process start-up: the one call every entry point makes first, before anything imports torch.

`start()` asks libgomp for short OpenMP waits (common/cpu_wait.py), which it reads once, when
torch loads it. Every `python -m` entry module calls it as its first statement (its imports
below may load torch), and tests/conftest.py calls it before importing torch, so tests run the
start-up users get. Library users who import torch themselves call it first. Idempotent; if
torch was imported before it ran, it warns once and the waits keep spinning. Package
`__init__` files have no side effects (tests/common/test_architecture.py checks both).
cuBLAS's workspace depends on the parsed options: engine/run/startup.py sets it after parsing.
"""
from __future__ import annotations

from common.cpu_wait import sleep_while_waiting


def start() -> bool:
    """Returns whether OpenMP waits will sleep in this process (False: torch came first, or the
    user's OMP_WAIT_POLICY / GOMP_SPINCOUNT asks for spinning)."""
    return sleep_while_waiting()
