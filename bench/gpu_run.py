"""One GPU-check step: a subprocess under an enforced limit, its log, what it measured.

At `limit - grace` the step's whole process group gets SIGTERM (a pytest step or a wrapped CLI
turns it into KeyboardInterrupt and writes what it has: bench/sigterm_interrupt.py; engine.train
saves its state), at the limit SIGKILL, so nothing it started keeps the GPU busy for the next
step and the step never runs past its limit.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path


def grace_s(limit: float) -> float:
    """Seconds between SIGTERM and SIGKILL: enough for pytest to finish its session (benchmark
    JSON, junit XML, its tables: ~4 s on the loaded 2-core CPU), small against the limit."""
    return min(10.0, max(2.0, 0.12 * limit))


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def run_step(cmd: list[str], cwd: Path, env: dict, log_path: Path, limit: float) -> dict:
    """{rc, seconds, cpu_s, timed_out, killed}: rc None when the step had to be killed."""
    cpu0, t0 = _children_cpu_s(), time.perf_counter()
    grace = grace_s(limit)
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = killed = False
        try:
            rc = proc.wait(timeout=max(0.1, limit - grace))
        except subprocess.TimeoutExpired:
            timed_out = True
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                killed = True
                _signal_group(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)  # stragglers (loader workers) of a step that ended
    seconds = time.perf_counter() - t0
    return {"rc": None if killed else rc, "seconds": round(seconds, 1), "cpu_s": round(_children_cpu_s() - cpu0, 1),
            "timed_out": timed_out, "killed": killed}


def junit_counts(path: Path) -> dict | None:
    """Tests run, failed, errors and skipped from a junit XML (None when absent or unreadable),
    with the first skip reason: on a machine without CUDA it says "needs CUDA"."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    reason = next((el.get("message", "") for el in root.iter("skipped")), "")
    if reason:
        counts["first_skip_reason"] = reason[:200]
    return counts


def status(result: dict) -> str:
    """One word or phrase for the summary."""
    if result.get("timed_out"):
        how = "SIGKILL after the SIGTERM grace" if result.get("killed") else "SIGTERM"
        return f"timed out (stopped at its limit by {how}; what it wrote so far is kept)"
    rc, tests = result.get("rc"), result.get("tests")
    if rc == 0 and tests and tests["tests"] and tests["skipped"] == tests["tests"]:
        return f"all {tests['tests']} skipped: {tests.get('first_skip_reason') or 'no reason given'}"
    if rc == 0:
        return "ok"
    if rc == 5 and tests is not None:
        return "no tests selected"
    return f"failed (exit {rc})"
