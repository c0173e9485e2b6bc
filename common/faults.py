"""One line for a fault of the machine (full disk, read-only or missing folder, quota):
what could not be done, to which path, and why, without a traceback."""
from __future__ import annotations

import errno
from pathlib import Path

from common.errors import WriteError

HINTS = {errno.ENOSPC: "free some space or choose another --out", errno.EDQUOT: "free some space or choose another --out",
         errno.EROFS: "choose a writable --out", errno.EACCES: "choose a writable --out",
         errno.EPERM: "choose a writable --out", errno.ENOTDIR: "a part of the path is a file, not a folder"}


def describe(exc: OSError) -> str:
    """`could not write X (No space left on device); ...` for WriteError, the same shape otherwise."""
    if isinstance(exc, WriteError):
        return str(exc)
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno == errno.EEXIST and exc.filename and Path(exc.filename).is_file():  # mkdir through a file
        return f"could not write{where} (a file is there, not a folder); choose another --out"
    hint = HINTS.get(exc.errno)
    return f"could not write{where} ({exc.strerror or exc})" + (f"; {hint}" if hint else "")
