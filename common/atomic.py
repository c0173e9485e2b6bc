"""Atomic writes: a temp file in the same folder, fsync, then rename over the target.

The one place in the tree that renames a temp over its target (tests/common/test_architecture.py
checks it): `atomic_write_bytes` / `atomic_write_json` for bytes this process writes, and
`atomic_path` for a writer that needs a file name of its own (a compiler, a library's dataset
writer, a folder filled image by image).

A crash or `kill -9` mid-write leaves the previous file intact (its temp file, named after
the writer's pid, is removed by the next write once that pid is gone); a full disk raises a
`WriteError` (an `OSError`) naming the file, and also leaves the previous one intact.
The new file gets the mode `open()` would give it (0666 less the umask), not mkstemp's 0600,
so colleagues sharing the machine can read results when the umask lets them.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from common.errors import WriteError  # noqa: F401 (defined below every package; raised here)


def _write_error(exc: OSError, path: Path, existed: bool, verb: str = "write") -> WriteError:
    kept = ("earlier lines are kept" if verb == "append to" else f"the previous {path.name} is kept") if existed \
        else "nothing was written"
    return WriteError(exc.errno, f"could not {verb} {path} ({exc.strerror or exc}); {kept}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Temp files of writers killed mid-write (kill -9, OOM killer): checkpoints are large."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            _remove(tmp)


def _remove(tmp: str | Path) -> None:
    try:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp)
        else:
            os.unlink(tmp)
    except OSError:
        pass


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (os.umask's
    set-and-restore would briefly give other threads' new files a wrong mode)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, write) -> None:
    """`write(fileobj)` fills a temp file that then replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise _write_error(exc, path, path.exists()) from None
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path, directory: bool = False):
    """A temp path beside `path` (a file, or a folder with `directory=True`) for the caller to
    fill; when the block ends normally it replaces `path` in one rename, on an exception it is
    removed. A folder that another process published first is kept (the race's loser drops its
    copy): folders here are caches whose content depends only on their name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    prefix, suffix = f".{path.name}.{os.getpid()}.", ".tmp"
    if directory:
        tmp = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent)
        os.chmod(tmp, 0o777 & ~current_umask())
    else:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
        os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
    try:
        yield Path(tmp)
    except BaseException:
        _remove(tmp)
        raise
    try:
        if not directory:  # the writer's bytes on disk before the name points at them
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        if not (directory and path.is_dir()):
            raise _write_error(exc, path, path.exists()) from None


def atomic_write_json(path: str | Path, obj) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
    atomic_write_bytes(path, lambda fh: fh.write(data))


def append_jsonl(path: str | Path, obj) -> None:
    """One line per call; a torn last line from a crash is tolerated by `read_jsonl`."""
    path = Path(path)
    existed = path.exists()
    try:
        with open(path, "a") as fh:
            fh.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _write_error(exc, path, existed, "append to") from None


def read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows
