"""A per-epoch progress bar (tqdm), silent when stderr is not a terminal or when turned off."""
from __future__ import annotations

import sys

from tqdm import tqdm


def progress(total: int, desc: str, mode: str = "auto", initial: int = 0) -> tqdm:
    disable = mode == "off" or (mode == "auto" and not sys.stderr.isatty())
    return tqdm(total=total, initial=initial, desc=desc, disable=disable, leave=False, dynamic_ncols=True)
