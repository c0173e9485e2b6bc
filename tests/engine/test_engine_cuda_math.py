"""CUDA math settings and the AMP input dtype, decided once when a run is built (checked on the CPU)."""
from __future__ import annotations

import pytest
import torch

from engine.run import build as run_build, cuda_math
from engine.train import main
from engine_testkit import FAST


@pytest.fixture
def restore_math():
    precision, benchmark = torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark
    yield
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.benchmark = benchmark


def test_cuda_runs_get_tf32_matmuls_and_autotuning_unless_deterministic(restore_math):
    torch.set_float32_matmul_precision("highest")
    cuda_math.configure(torch.device("cpu"), deterministic=False)
    assert torch.get_float32_matmul_precision() == "highest"  # the CPU is left alone
    cuda_math.configure(torch.device("cuda"), deterministic=False)
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.benchmark
    cuda_math.configure(torch.device("cuda"), deterministic=True)
    assert not torch.backends.cudnn.benchmark


@pytest.mark.parametrize("amp, dtype", [([], torch.float32), (["--amp", "--train.amp_dtype", "bf16"], torch.bfloat16)])
def test_loaders_write_the_autocast_dtype(tmp_path, monkeypatch, amp, dtype):
    built = []
    build = run_build.loaders.build_loader

    def recording_build(*args, **kwargs):
        loader = build(*args, **kwargs)
        built.append(kwargs.get("out_dtype"))
        return loader

    monkeypatch.setattr(run_build.loaders, "build_loader", recording_build)
    assert main(FAST + ["--epochs", "1", "--run.plan", "off", "--run.report", "false", "--out", str(tmp_path), *amp]) == 0
    assert built == [dtype] * 3


def test_deterministic_algorithms_follow_each_runs_option():
    """The flag is process-wide: a run after a deterministic one in the same process does not inherit it."""
    from engine.run.env import seed_everything
    before = torch.are_deterministic_algorithms_enabled()
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        seed_everything(0, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)
