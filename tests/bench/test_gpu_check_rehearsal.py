"""Both GPU-check calls rehearsed on the CPU with the GPU machine's package set: what comes back fits.

`python -m bench.gpu_check --call 1|2 --rehearse` runs the real schedule, commands, packaging and
summary; `--scale 0.05` shrinks every limit and the budget to a twentieth, so here every step
that imports torch is stopped at its limit (the path a slow step takes on the GPU) and the
whole test costs about 30 s. Both calls write into one $OUT, as a caller that keeps both would.
simplejpeg, wandb, ffcv and DALI are made unfindable for the check and every step it starts, as
tests/common/test_gpu_package_set.py does.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bench import gpu_plan

REPO = Path(__file__).resolve().parents[2]
SCALE = 0.05


def _package_blocker(folder: Path) -> Path:
    spec = importlib.util.spec_from_file_location("gpu_package_set", REPO / "tests/common/test_gpu_package_set.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(module.BLOCKER.format(blocked=module.ABSENT_ON_GPU_MACHINE))
    return folder


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_package_blocker(root / "blocker")), str(REPO)]),
               MEDTRAIN_CACHE=str(root / "cache"))
    out, printed = root / "out", {}
    for call in sorted(gpu_plan.CALLS):
        done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--call", call, "--rehearse", "--scale",
                               str(SCALE), "--out", str(out), "--work", str(root / f"work{call}")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode in (0, 1), done.stderr[-3000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        printed[call] = done.stdout
    return out, printed


def test_what_comes_back_fits_the_machines_limits(rehearsed):
    out, _ = rehearsed
    entries = list(out.iterdir())
    assert len(entries) <= gpu_plan.RESULT_FILES_MAX and all(p.is_file() for p in entries), entries
    assert all(p.stat().st_size <= gpu_plan.RESULT_FILE_MAX_BYTES for p in entries)
    for call in gpu_plan.CALLS:
        with tarfile.open(out / f"call{call}.tar.gz") as tar:
            assert f"call{call}/{gpu_plan.CALLS[call][0]}.log" in tar.getnames()


@pytest.mark.parametrize("call", sorted(gpu_plan.CALLS))
def test_the_summary_names_every_step_and_what_was_left_out(rehearsed, call):
    out, printed = rehearsed
    summary = json.loads((out / f"call{call}.summary.json").read_text())
    markdown = (out / f"call{call}.summary.md").read_text()
    tail = printed[call][-12000:]  # what the machine returns of stdout
    assert summary["rehearse"] and summary["gpu_figures"].startswith("unmeasured") and summary["problems"] == []
    assert summary["limits_sum_s"] <= gpu_plan.CALL_BUDGET_S * SCALE + 1e-6
    for step in gpu_plan.CALLS[call]:
        assert step in summary["steps"] or step in summary["not_run"], step
        assert f"\n{step} " in "\n" + tail and f"| {step} |" in markdown, step
    for left_out in gpu_plan.LEFT_OUT[call]:
        assert f"{left_out} " in tail and "left out for time" in tail
    assert tail.rstrip().splitlines()[-1].startswith(f"results: call{call}.summary.json")
