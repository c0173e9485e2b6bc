"""OpenMP waits are short (a brief spin, then sleep) in every process whose start-up call (common/startup.py) runs before torch loads (issues 19, 28)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_fresh(code: str, **env) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (libgomp reads its settings once, when torch loads it), with
    libgomp's own account of them at start-up on stderr (OMP_DISPLAY_ENV)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=clean | {"OMP_DISPLAY_ENV": "VERBOSE", "PYTHONPATH": str(REPO)} | env)


START_FIRST = "from common.startup import start; start()"


@pytest.fixture(scope="module")
def fresh_runs():
    """Each probe runs once per module: one test reads its spin count, another its warnings
    (a fresh interpreter costs a torch import, issue 25)."""
    runs = {}

    def run(code: str) -> subprocess.CompletedProcess:
        if code not in runs:
            runs[code] = run_fresh(code)
        return runs[code]
    return run


def entry_first(first: str) -> str:
    return f"{first}; import torch, engine; torch.ones(4).sum()"


# torch first, then the start-up call twice, then what sizes the threads by whether waits sleep.
TORCH_FIRST = ("import torch; from common.startup import start; start(); start(); import engine.run.env as e; "
               "from common.cpu_wait import waits_sleep; import sys; sys.stdout.write(str(waits_sleep()))")


@pytest.mark.parametrize("first", [START_FIRST, "import engine.evaluate", "import bench.step"])
def test_the_start_up_call_makes_waits_sleep(first, fresh_runs):
    # libgomp's own account of its spin count: the short spin took effect (default: 300000).
    # Entry modules (engine.evaluate, bench.step) make the call first, before their imports load torch.
    from common.cpu_wait import SPIN_COUNT
    out = fresh_runs(entry_first(first))
    assert out.returncode == 0, out.stderr[-2000:]
    if "GOMP_SPINCOUNT" not in out.stderr:
        pytest.skip("this torch build's OpenMP runtime does not report its settings")
    assert f"GOMP_SPINCOUNT = '{SPIN_COUNT}'" in out.stderr


def test_torch_first_is_detected_and_the_user_policy_kept(fresh_runs):
    out = fresh_runs(TORCH_FIRST)
    # Too late to change: engine.run.env then sizes threads by the free cores.
    assert out.returncode == 0 and out.stdout == "False", out.stderr[-2000:]
    kept = run_fresh(entry_first(START_FIRST), OMP_WAIT_POLICY="active")
    assert kept.returncode == 0, kept.stderr[-2000:]
    if "GOMP_SPINCOUNT" in kept.stderr:
        from common.cpu_wait import SPIN_COUNT
        assert f"GOMP_SPINCOUNT = '{SPIN_COUNT}'" not in kept.stderr


def test_importing_a_package_has_no_side_effect():
    code = "import os, common, engine, loaders, models, kernels, bench; print('GOMP_SPINCOUNT' in os.environ)"
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=clean | {"PYTHONPATH": str(REPO)})
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]


def test_thread_layout_uses_the_available_cores(monkeypatch):
    import torch

    from common import cpu_wait
    from engine.run import env
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    try:
        monkeypatch.setitem(cpu_wait._state, "short_waits", True)
        assert env.layout_cpu_threads() == len(os.sched_getaffinity(0))
        # Spinning waits: the cores other work holds are left out, never fewer than one thread.
        monkeypatch.setitem(cpu_wait._state, "short_waits", False)
        cores = len(os.sched_getaffinity(0))
        monkeypatch.setattr(env, "busy_cores", lambda cores_, seconds=0.2: cores)
        assert env.layout_cpu_threads() == 1
        monkeypatch.setattr(env, "busy_cores", lambda cores_, seconds=0.2: 0)
        assert env.layout_cpu_threads() == cores
        # A deterministic run's pool does not follow the load: reductions split by thread count.
        monkeypatch.setattr(env, "busy_cores", lambda cores_, seconds=0.2: cores)
        assert env.layout_cpu_threads(deterministic=True) == cores
        from engine.options.config import parse_args
        env.pick_device(parse_args(["--device", "cpu", "--train.deterministic", "true"]).config)
        assert torch.get_num_threads() == cores
        # A user's OMP_NUM_THREADS (torchrun sets 1 per rank) is kept as torch read it.
        torch.set_num_threads(1)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert env.layout_cpu_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_busy_cores_counts_a_spinning_process():
    from bench.contend import busy
    from engine.run.env import busy_cores
    cores = set(os.sched_getaffinity(0))
    with busy(1, seconds=30):
        assert busy_cores(cores, seconds=0.5) >= 1


def test_default_decode_workers_follow_the_cores_this_process_may_use(monkeypatch):
    # A container or taskset narrows the affinity mask; os.cpu_count() still reports the machine.
    from engine.options.config import Config
    from engine.options.resolve import loader_spec
    from loaders.spec import default_workers
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_workers(0) == 1 and default_workers(5) == 5
    assert loader_spec(Config()).workers == 1


def test_torch_first_warns_once_and_start_up_first_is_silent(fresh_runs):
    late = fresh_runs(TORCH_FIRST)
    assert late.returncode == 0 and late.stderr.count("torch was imported before medtrain") == 1, late.stderr
    early = fresh_runs(entry_first(START_FIRST))
    assert early.returncode == 0 and "torch was imported before" not in early.stderr, early.stderr


def test_the_native_kernels_share_the_one_cache_root(monkeypatch, tmp_path):
    from kernels import native_build
    from loaders.cache import cache_root
    monkeypatch.delenv("MEDTRAIN_KERNEL_CACHE", raising=False)
    monkeypatch.setenv("MEDTRAIN_CACHE", str(tmp_path))
    assert native_build.cache_dir() == cache_root() / "kernels" == tmp_path / "kernels"


@pytest.mark.parametrize("spin, policy, short", [
    ("3000", None, True),         # ours, inherited by a child of a started process (an xdist worker, a sweep's run)
    ("0", "active", True),        # libgomp: GOMP_SPINCOUNT overrides the policy
    ("2k", None, True),
    ("300000", None, False),      # libgomp's default: a descheduled peer stalls the region
    ("3M", None, False),
    ("infinite", "passive", False),
    (None, "passive", True),
    (None, "active", False),
])
def test_the_wait_setting_in_the_environment_is_read_as_libgomp_reads_it(spin, policy, short, monkeypatch):
    from common import cpu_wait
    monkeypatch.setitem(cpu_wait._state, "short_waits", None)
    for name, value in (("GOMP_SPINCOUNT", spin), ("OMP_WAIT_POLICY", policy)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert cpu_wait.sleep_while_waiting() is short
