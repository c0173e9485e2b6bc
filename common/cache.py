"""The one cache root of the project: generated datasets, FFCV files and compiled native
kernels all live under it, so one variable moves (or, in tests, isolates) every cached file."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str = "") -> Path:
    """`--data.cache_dir`, else $MEDTRAIN_CACHE, else ~/.cache/medtrain."""
    base = cache_dir or os.environ.get("MEDTRAIN_CACHE") or os.path.join(Path.home(), ".cache", "medtrain")
    return Path(base).expanduser()
