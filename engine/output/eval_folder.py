"""The default output folder of engine.evaluate: `<run>/eval-<data name>[-split][-tta]`, and
never one that holds the evaluation of other data.

Two datasets with the same folder name (`siteA/test`, `siteB/test`) would both map to
`eval-test` and overwrite each other. Each evaluation folder records the absolute path of the
data it scored (`.evaluated_data`); a folder recording other data, or locked by an evaluation
running now, is passed over for `eval-test-2`, `-3`, ... Evaluating the same data again
reuses (overwrites) its own folder. An explicit `--out` is used as given, locked for the time
of the evaluation.
"""
from __future__ import annotations

import json
from pathlib import Path

from common import run_lock
from common.atomic import atomic_write_bytes

MARKER = ".evaluated_data"
MAX_TRIES = 1000


def _resolved(data: str) -> str:
    return data if data == "synthetic" else str(Path(data).expanduser().resolve())


def _recorded(folder: Path) -> str:
    """The data a folder holds the evaluation of; '' for a new folder."""
    if (folder / MARKER).exists():
        return (folder / MARKER).read_text().strip()
    try:  # written before the marker existed: its metrics name the data
        return _resolved(json.loads((folder / "metrics.json").read_text())["data"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def claim(checkpoint_dir: str, data: str, suffix: str, explicit_out: str = "") -> Path:
    """Lock and return the folder this evaluation writes to (see the module docstring)."""
    if explicit_out:
        out = Path(explicit_out).expanduser()
        run_lock.acquire(out, "evaluation")
        return out
    name = Path(data.rstrip("/")).stem or "data"
    base = Path(checkpoint_dir) / f"eval-{name}{suffix}"
    resolved = _resolved(data)
    for i in range(1, MAX_TRIES + 1):
        candidate = base if i == 1 else base.with_name(f"{base.name}-{i}")
        if candidate.exists() and _recorded(candidate) not in ("", resolved):
            continue
        if not run_lock.try_acquire(candidate):
            continue  # another evaluation is writing there now
        if _recorded(candidate) in ("", resolved):
            atomic_write_bytes(candidate / MARKER, lambda fh: fh.write(resolved.encode() + b"\n"))
            return candidate
        run_lock.release(candidate)
    raise OSError(f"no free evaluation folder beside {base} after {MAX_TRIES} tries; give --out")
