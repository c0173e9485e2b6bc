"""`make gpu-check` on the CPU: each call fits its budget with margins, limits are enforced with a
grace that lets a step write what it has, and the results are what the GPU machine returns.

The steps themselves need a GPU; here the step commands are replaced by short Python processes
(one ignores SIGTERM, one writes its partial result on SIGTERM). The whole schedule on the CPU
is tests/bench/test_gpu_check_rehearsal.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from bench import gpu_check, gpu_plan, gpu_results
from bench.gpu_run import junit_counts, status
from engine.options.config import parse_args


@pytest.mark.parametrize("call", sorted(gpu_plan.CALLS))
def test_each_call_fits_its_budget_with_margins_and_every_step_has_commands(call, tmp_path):
    steps = [gpu_plan.STEPS[s] for s in gpu_plan.CALLS[call]]
    assert sum(s.limit_s for s in steps) <= gpu_plan.CALL_BUDGET_S <= 270
    for step in steps:
        assert step.limit_s >= gpu_plan.MARGIN * (step.setup_s + step.gpu_s), step.name
        assert step.gpu_s >= step.window_s, step.name  # the timed windows sit inside the step
        for rehearse in (False, True):
            assert gpu_plan.command(step.name, tmp_path, rehearse)[0] == sys.executable
    assert gpu_plan.LEFT_OUT[call], "what a call leaves out for time is listed"


def test_call_one_trains_with_the_plan_off_and_an_explicit_compiled_graphed_recipe(tmp_path):
    argv = gpu_plan.train_command(tmp_path, rehearse=False)
    given = argv[argv.index("engine.train") + 1:]
    cfg = parse_args(given).config
    assert (cfg.data.loader, cfg.train.compile, cfg.train.cuda_graph, cfg.train.amp) == ("nvjpeg", True, True, True)
    assert cfg.run.plan == "off" and cfg.train.ema == 0 and cfg.sampler.kind == "uniform"
    for option in ("--lr", "--epochs", "--batch-size", "--image-size", "--data.color_constancy", "--schedule.name"):
        assert option in given, option  # explicit: nothing left for a default to change
    twin = parse_args(gpu_plan.train_command(tmp_path, rehearse=True)[3:]).config
    assert (twin.train.device, twin.train.cuda_graph, twin.run.plan, twin.data.loader) == ("cpu", False, "off", "plain")


TERM_WRITES = ("import signal, sys, time, pathlib\n"
               "def stop(*a):\n"
               "    pathlib.Path(sys.argv[1], 'partial.json').write_text('{\"measured\": 1}')\n"
               "    sys.exit(1)\n"
               "signal.signal(signal.SIGTERM, stop)\n"
               "print('warming up', flush=True)\n"
               "time.sleep(60)\n")
TERM_IGNORED = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"


def _fake_steps(monkeypatch, scripts: dict, limits: dict) -> None:
    monkeypatch.setattr(gpu_plan, "command", lambda step, work, rehearse=False:
                        [sys.executable, "-c", scripts.get(step, "print('ok')"), str(work)])
    steps = {n: gpu_plan.Step(n, limits.get(n, s.limit_s), 0, 0, 0, "") for n, s in gpu_plan.STEPS.items()}
    monkeypatch.setattr(gpu_check, "STEPS", steps)


def test_limits_are_enforced_a_stopped_step_keeps_what_it_wrote_and_results_stay_small(tmp_path, monkeypatch, capsys):
    _fake_steps(monkeypatch, {"tests": TERM_WRITES, "train": TERM_IGNORED}, {"tests": 6, "train": 5})
    out, work = tmp_path / "out", tmp_path / "work"
    code = gpu_check.main(["--out", str(out), "--work", str(work), "--call", "1", "--budget", "20"])
    summary = json.loads((out / "call1.summary.json").read_text())
    assert code == 1
    tests, train = summary["steps"]["tests"], summary["steps"]["train"]
    assert tests["timed_out"] and not tests["killed"] and tests["seconds"] <= 6.5 and tests["rc"] == 1
    assert train["timed_out"] and train["killed"] and train["rc"] is None and train["seconds"] <= 5.5
    with tarfile.open(out / "call1.tar.gz") as tar:
        names = tar.getnames()
        assert json.load(tar.extractfile("call1/partial.json")) == {"measured": 1}
    assert {"call1/tests.log", "call1/train.log"} <= set(names)
    assert sorted(p.name for p in out.iterdir()) == ["call1.summary.json", "call1.summary.md", "call1.tar.gz"]
    printed = capsys.readouterr().out
    summary_text = printed[printed.index("-- tests: last 20 lines"):]
    assert "warming up" in summary_text and "tests          timed out" in summary_text
    assert printed.rstrip().splitlines()[-1].startswith("results: call1.summary.json")


def test_a_budget_too_small_lists_the_step_with_the_command_that_runs_it(tmp_path, monkeypatch):
    _fake_steps(monkeypatch, {"tests": "import time; time.sleep(3)"}, {"tests": 12, "train": 12})
    code = gpu_check.main(["--out", str(tmp_path), "--work", str(tmp_path / "w"), "--steps", "tests,train",
                           "--budget", "12"])
    summary = json.loads((tmp_path / "steps.summary.json").read_text())
    assert code == 1 and summary["steps"]["tests"]["status"] == "ok"
    assert "STEPS=train" in summary["not_run"]["train"]
    assert "NOT RUN" in (tmp_path / "steps.summary.md").read_text()


def test_the_archive_leaves_out_the_checkpoint_and_large_files_and_says_so(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "train" / "report").mkdir(parents=True)
    (work / "train" / "checkpoint.pt").write_bytes(b"0" * 1000)
    (work / "train" / "report" / "big.png").write_bytes(os.urandom(600 * 2**10))
    (work / "train" / "metrics.json").write_text("{}")
    (work / "train.log").write_bytes(b"x\n" * (3 * 2**20))  # a 6 MiB log keeps its head and its tail
    monkeypatch.setattr(gpu_results, "ARCHIVE_RAW_BYTES", 2 * 2**20)
    done = gpu_results.write_archive(work, tmp_path / "call1.tar.gz", failed={"train"})
    assert set(done["members"]) == {"train.log", "train/metrics.json"}
    assert done["members"]["train.log"] < 2 * 2**20 and done["bytes"] == (tmp_path / "call1.tar.gz").stat().st_size
    assert set(done["left_out"]) == {"train/checkpoint.pt", "train/report/big.png"}


def test_a_step_whose_gpu_tests_all_skip_says_why(tmp_path):
    (tmp_path / "t.xml").write_text('<testsuites><testsuite tests="2" failures="0" errors="0" skipped="2">'
                                    '<testcase name="a"><skipped message="needs CUDA"/></testcase>'
                                    '<testcase name="b"><skipped message="needs CUDA"/></testcase>'
                                    '</testsuite></testsuites>')
    tests = junit_counts(tmp_path / "t.xml")
    assert tests["skipped"] == 2 and status({"rc": 0, "tests": tests}) == "all 2 skipped: needs CUDA"
    assert junit_counts(tmp_path / "absent.xml") is None


def test_children_keep_the_callers_python_path_and_never_write_into_out(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/blocker")
    env = gpu_check.child_env(tmp_path)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(gpu_plan.REPO), "/blocker"]
    assert env["OUT"].startswith(str(tmp_path))


def test_unknown_steps_are_one_line(capsys, tmp_path):
    assert gpu_check.main(["--out", str(tmp_path), "--steps", "warp"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown step(s) warp")


INTERRUPTED_BENCHMARKS = '''
import time
def test_fast(benchmark):
    benchmark.pedantic(lambda: time.sleep(0.01), rounds=2, iterations=1)
def test_slow(benchmark):
    print("slow started", flush=True)
    benchmark.pedantic(lambda: time.sleep(120), rounds=1, iterations=1)
'''


def test_a_pytest_step_stopped_by_sigterm_still_writes_its_finished_benchmarks(tmp_path):
    (tmp_path / "test_interrupted.py").write_text(INTERRUPTED_BENCHMARKS)
    log = tmp_path / "log"
    # As the GPU check runs it: a plain pytest (under xdist, pytest-benchmark would disable itself)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")} | {"PYTHONPATH": str(gpu_plan.REPO)}
    cmd = [sys.executable, "-m", "pytest", str(tmp_path / "test_interrupted.py"), "-q", "-s", "-p", "no:cacheprovider",
           "-p", "no:xdist",
           "-p", "bench.sigterm_interrupt", "--rootdir", str(tmp_path), "--junitxml", str(tmp_path / "j.xml"),
           "--benchmark-json", str(tmp_path / "b.json")]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while "slow started" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
    assert (tmp_path / "b.json").exists(), log.read_text()[-3000:]
    names = [b["name"] for b in json.loads((tmp_path / "b.json").read_text())["benchmarks"]]
    assert names == ["test_fast"], log.read_text()[-2000:]
    assert junit_counts(tmp_path / "j.xml")["tests"] >= 1


def test_the_steps_cache_is_not_a_result_and_long_left_out_lists_are_cut(tmp_path):
    work = tmp_path / "work"
    (work / "cache").mkdir(parents=True)
    (work / "cache" / "a.json").write_text("{}")
    (work / "many").mkdir()
    for i in range(gpu_results.LEFT_OUT_LISTED + 5):
        (work / "many" / f"{i}.jpg").write_bytes(b"j")
    done = gpu_results.write_archive(work, tmp_path / "call2.tar.gz", failed=set())
    assert not done["members"] and len(done["left_out"]) == gpu_results.LEFT_OUT_LISTED + 1
    assert done["left_out"]["..."] == "5 more files" and not any(k.startswith("cache") for k in done["left_out"])


def test_the_other_calls_files_are_fine_anything_else_in_out_is_a_problem(tmp_path, monkeypatch):
    _fake_steps(monkeypatch, {}, {})
    out = tmp_path / "out"
    out.mkdir()
    for name in ("call1.summary.json", "call1.summary.md", "call1.tar.gz"):
        (out / name).write_text("x")
    gpu_check.main(["--out", str(out), "--work", str(tmp_path / "w"), "--steps", "compare"])
    assert json.loads((out / "steps.summary.json").read_text())["problems"] == []
    (out / "stray.png").write_text("x")
    gpu_check.main(["--out", str(out), "--work", str(tmp_path / "w2"), "--steps", "compare"])
    assert any("stray.png" in p for p in json.loads((out / "steps.summary.json").read_text())["problems"])
