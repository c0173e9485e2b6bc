"""One torchrun worker: what TORCH_NCCL_ASYNC_ERROR_HANDLING the launcher gave it, and what the
engine's set-up leaves there. Prints `launcher=<v> engine=<v>` on stdout; argv: engine options."""
from __future__ import annotations

import os
import sys

from engine.run import distributed
from engine.options.config import parse_args

launcher = os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING")
cfg = parse_args(["--device", "cpu", "--dist.timeout_s", "60", *sys.argv[1:]]).config
ctx, _ = distributed.setup(cfg)
print(f"rank={ctx.rank} launcher={launcher} engine={os.environ.get('TORCH_NCCL_ASYNC_ERROR_HANDLING')}", flush=True)
distributed.shutdown()
