"""bench.profile on the CPU: runs, says there is no GPU, reports CPU utilisation, writes a trace."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.record import REPO


@pytest.mark.ci
def test_profile_cpu_explains_no_gpu(tmp_path):
    out = tmp_path / "profile"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.profile", "--data", "synthetic", "--data.synthetic_count", "200", "--model", "mlp",
         "--batch-size", "16", "--device", "cpu", "--seconds", "1", "--warmup-steps", "1", "--profile-steps", "1",
         "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no GPU" in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["gpu"] is False and result["utilisation"]["source"] == "psutil"
    assert result["images_per_second"] > 0 and 0 <= result["data_wait_share"] <= 1
    assert (out / "trace.json.gz").stat().st_size > 0 and "Self CPU" in (out / "top_kernels.txt").read_text()


@pytest.mark.gpu
def test_profile_gpu_samples_nvml(tmp_path):
    out = tmp_path / "profile"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.profile", "--data", "synthetic", "--model", "resnet18", "--amp",
         "--batch-size", "128", "--device", "cuda", "--seconds", "5", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["gpu"] is True and result["utilisation"]["samples"] > 10
