"""One rank of tests/dist/test_ddp.py, as tests/dist/warm_ranks.py forks it: `python -m ddp_rank OUT_DIR`
with RANK and WORLD_SIZE in the environment runs workers.spawned (gloo through a file in OUT_DIR)."""
from __future__ import annotations

from common.startup import start

start()  # first, before workers loads torch (as every entry point)

import os
import sys

import workers

if __name__ == "__main__":
    workers.spawned(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), sys.argv[1])
