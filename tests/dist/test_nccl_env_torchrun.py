"""Under torchrun the engine's NCCL error handling holds, whatever the launcher put there.

torchrun's elastic agent gives every worker TORCH_NCCL_ASYNC_ERROR_HANDLING=1 unless the
launcher's own environment sets it; 1 ends a rank with SIGABRT from NCCL's watchdog instead of
PeerLost's one line. Launched for real (gloo on the CPU: the variable is the same either way).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_workers_see_the_engines_value_not_the_launchers():
    env = {k: v for k, v in os.environ.items() if k != "TORCH_NCCL_ASYNC_ERROR_HANDLING"}
    env |= {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "tests" / "dist" / "nccl_env_worker.py")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # Found, not split by lines: the two workers share torchrun's stdout and their lines can
    # arrive interleaved without a newline between them on a busy machine.
    lines = sorted(re.findall(r"rank=\d+ launcher=\S+ engine=\S+?(?=rank=|\s|$)", done.stdout))
    # The launcher's 1 is there (so this test would catch a setdefault), and the engine's 2 wins.
    assert lines == ["rank=0 launcher=1 engine=2", "rank=1 launcher=1 engine=2"], done.stdout + done.stderr[-2000:]
