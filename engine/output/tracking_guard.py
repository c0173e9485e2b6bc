"""wandb on a full disk or a read-only run folder: one `error:` line, not a traceback flood.

wandb writes its logs, the console copy and media files into `RUN/wandb`. When that fails,
its logging handlers print a traceback per log record (hundreds of lines) and `finish` raises
from a file copy. So tracking checks before starting that the folder takes a file and has
room (`MIN_FREE`), keeps Python's logging from printing handler tracebacks while wandb runs
(`logging.raiseExceptions`, which the logging docs advise turning off in production), and
turns a failed write during tracking into a `WriteError` naming the path: the CLI prints
it as one line and exits 1. A run cannot finish on a full disk anyway (its checkpoint would
fail next); failing at once says why.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import shutil
from pathlib import Path

from common.atomic import WriteError, atomic_write_bytes

MIN_FREE = 16 * 2**20  # bytes wandb needs for its logs and the report images it copies


def preflight(run_dir: str | Path) -> Path:
    """The wandb folder, after checking it takes a file and has MIN_FREE bytes; WriteError otherwise."""
    folder = Path(run_dir) / "wandb"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-probe"
        atomic_write_bytes(probe, lambda fh: fh.write(b"ok\n"))
        probe.unlink()
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise _tracking_error(exc, folder) from None
    if free < MIN_FREE:
        raise WriteError(errno.ENOSPC, f"could not write {folder} (No space left on device: {free // 2**20} MiB free, "
                                       f"tracking needs {MIN_FREE // 2**20}); free some space or use --wandb disabled")
    return folder


def _tracking_error(exc: OSError, where: Path) -> WriteError:
    if isinstance(exc, WriteError):  # already names the file and what was kept
        return WriteError(exc.errno, f"{exc}; tracking needs a writable run folder (or --wandb disabled)")
    path = getattr(exc, "filename2", None) or exc.filename or where  # a copy names its target second
    reason = exc.strerror or (exc.args[-1] if exc.args else type(exc).__name__)
    return WriteError(exc.errno or errno.EIO, f"could not write {path} ({reason}); tracking stopped: free some space, "
                                              "choose a writable --out or use --wandb disabled")


@contextlib.contextmanager
def quiet_failures(where: Path):
    """Around wandb calls: no handler tracebacks on stderr; a failed write becomes a WriteError."""
    logging.raiseExceptions = False  # stays off: wandb's handlers keep running in its threads
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise _tracking_error(exc, where) from None
