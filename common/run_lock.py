"""One writer per output folder: an exclusive `flock` on `<folder>/.lock`.

A second run, cv or evaluation started on a folder that is in use is refused at once with
one line naming the holder, instead of both writing and leaving files mixed from the two.
The kernel drops an flock when its process ends, however it ends (exit, crash, kill -9),
so a lock file left behind never blocks a later run: there is no stale lock to clean.
Locks taken inside `scope()` are released when the scope ends, so a process may run one
folder several times in a row (a run, then its resume). flock is advisory and local: two
machines writing one network folder are not kept apart by it.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from datetime import datetime
from pathlib import Path

from common.errors import ConfigError

NAME = ".lock"
_held: dict[str, int] = {}      # resolved folder -> open descriptor holding its lock
_scopes: list[list[str]] = []   # folders locked inside each active scope()


def acquire(folder: str | Path, what: str = "run") -> None:
    """Lock `folder` for this process, or ConfigError naming who holds it. Idempotent."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _held:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip()
        os.close(fd)
        raise ConfigError(f"{folder} is in use by another {what} ({holder or 'holder unknown'}); "
                          "wait for it to finish or choose another --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}, since {datetime.now():%Y-%m-%d %H:%M:%S}".encode())
    _held[key] = fd
    if _scopes:
        _scopes[-1].append(key)


def try_acquire(folder: str | Path) -> bool:
    """`acquire` that answers False instead of refusing (for choosing among folders)."""
    try:
        acquire(folder)
    except ConfigError:
        return False
    return True


def release(folder: str | Path) -> None:
    fd = _held.pop(str(Path(folder).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


@contextlib.contextmanager
def scope():
    """Locks taken while the block runs are released when it ends, however it ends."""
    _scopes.append([])
    try:
        yield
    finally:
        for key in _scopes.pop():
            fd = _held.pop(key, None)
            if fd is not None:
                os.close(fd)
