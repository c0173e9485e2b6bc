"""Process environment that CUDA libraries read once: set at start-up, before torch touches them.

cuBLAS reads `CUBLAS_WORKSPACE_CONFIG` when its first handle is made; set after a matmul has run
on the GPU (a plan's calibration, an earlier run in the same process) it no longer holds, and
deterministic mode only warns. So the entry points call `prepare` right after parsing, before
they import the heavy modules. No torch import here: this runs before torch is loaded.
"""
from __future__ import annotations

import os

from engine.options.config import Config

# The smaller of the two workspaces cuBLAS documents as reproducible (":16:8" also is; a value
# the user set is kept).
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def prepare(cfg: Config) -> None:
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
