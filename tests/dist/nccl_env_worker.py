"""One torchrun worker: what TORCH_NCCL_ASYNC_ERROR_HANDLING the launcher gave it, and what the
engine's set-up leaves there. Prints `rank=<r> launcher=<v> engine=<v> setup_s=<s>` on stdout;
argv: engine options. With SLOW_JOIN_S in its environment, rank 1 finishes joining the group
that many seconds late (after its connections are made), as a descheduled rank on a busy machine.
"""
from __future__ import annotations

import os
import sys
import time

import torch.distributed.distributed_c10d as c10d

from engine.run import distributed
from engine.options.config import parse_args

launcher = os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING")
slow = float(os.environ.get("SLOW_JOIN_S", "0"))
if slow and os.environ.get("RANK") == "1":
    made = c10d._update_default_pg  # called once the group's connections are made, before init returns

    def _late(pg):
        time.sleep(slow)
        made(pg)
    c10d._update_default_pg = _late
cfg = parse_args(["--device", "cpu", "--dist.timeout_s", "60", *sys.argv[1:]]).config
start = time.monotonic()
ctx, _ = distributed.setup(cfg)
took = time.monotonic() - start
print(f"rank={ctx.rank} launcher={launcher} engine={os.environ.get('TORCH_NCCL_ASYNC_ERROR_HANDLING')} "
      f"setup_s={took:.2f}", flush=True)
distributed.shutdown()  # at once: rank 0 leaves while a slow rank 1 may still be joining
