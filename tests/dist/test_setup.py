"""What is decided before any process waits on another: environment, refusals, one-process no-ops."""
from __future__ import annotations

import os

import pytest
import torch

from engine.run import distributed
from engine.options.config import ConfigError, parse_args, config_usage


def test_no_torchrun_environment_means_one_process(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.env_ranks() == (0, 0, 1)
    ctx, device = distributed.setup(parse_args(["--device", "cpu"]).config)
    assert (ctx.world_size, ctx.is_main, ctx.enabled, device.type) == (1, True, False, "cpu")


def test_torchrun_environment_is_read(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.env_ranks() == (3, 1, 4)


@pytest.mark.parametrize("env, words", [({"WORLD_SIZE": "2", "RANK": "2"}, "inconsistent torchrun environment"),
                                        ({"WORLD_SIZE": "two"}, "must be integers")])
def test_broken_environment_is_one_clear_error(monkeypatch, env, words):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=words):
        distributed.env_ranks()


@pytest.mark.parametrize("argv, words", [
    (["--batch-size", "30"], "--batch-size 30 is the global batch and must be divisible by the 4 processes"),
    (["--cuda-graph"], "--cuda-graph is single-process only"),
    (["--dist.sync_bn"], "--dist.sync_bn needs CUDA"),
])
def test_refused_combinations_name_the_reason(argv, words):
    with pytest.raises(ConfigError, match=words.replace("-", r"\-").replace(".", r"\.")):
        distributed.check_config(parse_args(["--batch-size", "32", *argv]).config, 4, torch.device("cpu"))


def test_one_process_merges_are_identity():
    cm = torch.eye(3, dtype=torch.int64)
    probs, labels = torch.rand(5, 3), torch.arange(5) % 3
    assert distributed.merge_eval(cm, probs, labels) == (cm, probs, labels)
    assert distributed.sum_counts([1, 2], torch.device("cpu")) == [1, 2]
    assert distributed.stop_requested("SIGTERM", 3, 50, torch.device("cpu"))
    assert not distributed.stop_requested(None, 3, 50, torch.device("cpu"))


def test_backend_messages_lose_source_paths():
    exc = RuntimeError("[/src/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:1: Connection reset by peer. "
                       "This is typically caused by a remote worker hanging or bugs in the application code " * 2)
    assert distributed.is_peer_failure(exc)
    assert distributed._first_line(exc) == "Read error [127.0.0.1]:1: Connection reset by peer."
    assert not distributed.is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_nccl_error_handling_is_set_before_the_group_is_created(monkeypatch):
    """NCCL reads TORCH_NCCL_ASYNC_ERROR_HANDLING when the group is created: torch's default (3)
    kills a rank from a C++ thread, so PeerLost and its one line would never happen on GPUs."""
    seen = {}

    def fake_init(backend, **kwargs):
        seen[backend] = os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING")
        raise RuntimeError("stop here: no peer in this test")

    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # what torchrun's elastic agent puts there
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(distributed, "pick_device", lambda cfg: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(distributed.dist, "init_process_group", fake_init)
    with pytest.raises(distributed.PeerLost, match="could not join"):
        distributed.setup(parse_args(["--device", "cuda"]).config)
    assert seen == {"nccl": "2"}
    # Another value only through the engine's option.
    with pytest.raises(distributed.PeerLost, match="could not join"):
        distributed.setup(parse_args(["--device", "cuda", "--dist.nccl_error_handling", "3"]).config)
    assert seen == {"nccl": "3"}
    lines = config_usage().splitlines()
    at = next(i for i, line in enumerate(lines) if "--dist.nccl_error_handling" in line)
    assert "--dist.nccl_error_handling 2" in lines[at] and "launcher" in lines[at + 1]  # its help line follows
