"""`make gpu-check` on the CPU: each call fits its budget, limits are enforced, summary.json survives.

The steps themselves need a GPU; what is checked here is the harness around them, with the step
commands replaced by short Python processes (one sleeps past its limit).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import gpu_check
from engine.config import parse_args


@pytest.mark.parametrize("call", sorted(gpu_check.CALLS))
def test_each_call_fits_its_budget_and_every_step_has_a_command(call, tmp_path):
    steps = gpu_check.CALLS[call]
    assert sum(gpu_check.LIMITS[s] for s in steps) <= gpu_check.DEFAULT_BUDGET
    for step in steps:
        assert gpu_check.command(step, tmp_path)[0] == sys.executable


def test_the_real_training_step_is_a_valid_compiled_graphed_nvjpeg_run(tmp_path):
    argv = gpu_check.train_command(tmp_path)
    cfg = parse_args(argv[argv.index("engine.train") + 1:])
    assert (cfg.data.loader, cfg.train.compile, cfg.train.cuda_graph, cfg.train.amp) == ("nvjpeg", True, True, True)


def test_limits_are_enforced_and_summary_lists_what_did_not_run(tmp_path, monkeypatch):
    quick = {"tests": "import time; time.sleep(3)", "train": "import time; time.sleep(30)"}
    monkeypatch.setattr(gpu_check, "command", lambda step, out: [sys.executable, "-c", quick.get(step, "pass")])
    monkeypatch.setattr(gpu_check, "LIMITS", dict(gpu_check.LIMITS, tests=20, train=2))
    code = gpu_check.main(["--out", str(tmp_path), "--call", "1"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert code == 1
    assert summary["steps"]["tests"]["rc"] == 0 and not summary["steps"]["tests"]["timed_out"]
    assert summary["steps"]["train"]["timed_out"] and summary["steps"]["train"]["seconds"] < 15
    # A budget too small for the second step: it is listed with the command that runs it.
    code = gpu_check.main(["--out", str(tmp_path / "short"), "--steps", "tests,train", "--budget", "12"])
    summary = json.loads((tmp_path / "short" / "summary.json").read_text())
    assert code == 1 and "tests" in summary["steps"] and "STEPS=train" in summary["not_run"]["train"]


def test_summary_is_written_when_the_plot_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "command", lambda step, out: [sys.executable, "-c", "pass"])
    (tmp_path / "bench-e2e.json").write_text(json.dumps({"machine_info": {}, "benchmarks": []}))
    real_run = subprocess.run

    def slow_plot(cmd, *args, **kwargs):
        if "bench.plot" in cmd:
            raise subprocess.TimeoutExpired(cmd, kwargs.get("timeout"))
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(gpu_check.subprocess, "run", slow_plot)
    assert gpu_check.main(["--out", str(tmp_path), "--steps", "tests"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"]["tests"]["rc"] == 0 and any("bench.plot timed out" in p for p in summary["problems"])


def test_unknown_steps_are_one_line(capsys, tmp_path):
    assert gpu_check.main(["--out", str(tmp_path), "--steps", "warp"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown step(s) warp")
