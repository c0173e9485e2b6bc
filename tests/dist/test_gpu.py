"""The CUDA side of DDP (run by the lead's gpu-check; skipped without CUDA).

Two processes share one GPU over gloo (NCCL refuses two ranks on one device), which exercises
DDP with CUDA tensors, channels_last, bf16 autocast and fused optimizers; NCCL itself needs two
GPUs and is tested through torchrun when they are there.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
import workers  # noqa: E402
from test_cli import REPO, _env  # noqa: E402

pytestmark = pytest.mark.gpu


def test_ddp_step_on_cuda_matches_one_process(tmp_path):
    mp.start_processes(workers.spawned, args=(2, str(tmp_path), workers.run_cuda), nprocs=2, join=True,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"cuda_rank{r}.pt", weights_only=False) for r in range(2)]
    workers.run_cuda(0, 1, str(tmp_path))
    single = torch.load(tmp_path / "cuda_rank0.pt", weights_only=False)
    a, b = (r["fp32"]["after"] for r in ranks)
    for key in a:  # fp32 SGD step: the global batch's gradient, summed in another order
        assert torch.equal(a[key], b[key]), key
        torch.testing.assert_close(a[key], single["fp32"]["after"][key], atol=1e-5, rtol=0)
    a, b = (r["bf16"]["after"] for r in ranks)
    for key in a:  # bf16 + channels_last CNN: ranks identical (BN running stats stay per rank)
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(a[key], b[key]), key
            assert not torch.equal(a[key], ranks[0]["bf16"]["before"][key]), f"{key} did not move"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL with two ranks needs two GPUs")
def test_torchrun_nccl_two_gpus(tmp_path):
    out = tmp_path / "nccl"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "engine.train", "--data", "synthetic", "--data.synthetic_count", "400",
                           "--device", "cuda", "--amp", "--epochs", "2", "--out", str(out), "--train.progress", "off"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2
