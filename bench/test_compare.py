"""The regression guard itself: the committed reference passes, a 30%-slower copy fails."""
from __future__ import annotations

import json

import pytest

from bench import compare

REFERENCE = compare.RESULTS / "reference-cpu.json"


def fake(ratio: float, tolerance: float | None = None) -> dict:
    info = {"device_kind": "cpu", "ratios": {"engine_vs_baseline": ratio}}
    if tolerance is not None:
        info["tolerances"] = {"engine_vs_baseline": tolerance}
    return {"benchmarks": [{"name": "test_x", "extra_info": info}]}


@pytest.mark.ci
def test_committed_reference_passes_and_doctored_fails(tmp_path):
    reference = compare.load_results(REFERENCE)
    assert compare.ratios(reference), "the committed CPU reference holds no ratios"
    assert compare.compare(reference, reference)[0]
    slow = tmp_path / "slow.json"
    assert compare.main([str(REFERENCE), "--doctor", "0.3", "-o", str(slow)]) == 0
    assert compare.main([str(slow), "--reference", str(REFERENCE)]) == 1
    assert compare.main([str(REFERENCE)]) == 0  # default reference chosen by device kind


@pytest.mark.ci
@pytest.mark.parametrize("new, expected", [(3.0, True), (2.3, True), (2.24, False), (10.0, True)])
def test_tolerance_is_one_sided(new, expected):
    assert compare.compare(fake(new), fake(3.0))[0] is expected  # 25%: 3.0 -> floor 2.25


@pytest.mark.ci
def test_reference_tolerance_overrides_default():
    assert compare.compare(fake(1.5), fake(3.0, tolerance=0.6))[0]
    assert not compare.compare(fake(1.1), fake(3.0, tolerance=0.6))[0]


@pytest.mark.ci
def test_missing_ratio_fails_and_bad_input_is_exit_2(tmp_path):
    empty = {"benchmarks": [{"name": "test_x", "extra_info": {"device_kind": "cpu", "ratios": {}}}]}
    assert not compare.compare(empty, fake(3.0))[0]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert compare.main([str(bad)]) == 2
    assert compare.main([str(tmp_path / "absent.json")]) == 2


@pytest.mark.ci
def test_cli_json_lines_are_accepted(tmp_path):
    lines = tmp_path / "lines.jsonl"
    lines.write_text("\n".join(json.dumps({"benchmark": f"b{i}", "device_kind": "cpu", "ratios": {"r": 2.0}})
                               for i in range(2)))
    assert compare.ratios(compare.load_results(lines)) == {"b0.r": 2.0, "b1.r": 2.0}


@pytest.mark.ci
def test_a_cpu_kind_reads_its_own_references_where_measured():
    from bench.compare import compare, cpu_kind, for_this_cpu
    assert cpu_kind("flags\t: fpu avx2 avx512f amx_bf16\n") == "amx"
    assert cpu_kind("flags\t: fpu avx2 avx512f avx512_bf16\n") == "avx512"
    assert cpu_kind("flags\t: fpu avx avx2\n") == "avx2" and cpu_kind("") == "avx2"
    ref = {"benchmarks": [{"name": "b", "extra_info": {"ratios": {"r": 10.0, "s": 2.0},
                                                        "by_cpu": {"avx2": {"ratios": {"r": 6.0}, "tolerances": {"r": 0.4}}}}}]}
    new = {"benchmarks": [{"name": "b", "extra_info": {"ratios": {"r": 4.0, "s": 2.0}}}]}
    assert not compare(new, for_this_cpu(ref, "amx"))[0]        # 4 is 60% under the amx reference
    assert compare(new, for_this_cpu(ref, "avx2"))[0]           # within 40% of the avx2 one
    slower = {"benchmarks": [{"name": "b", "extra_info": {"ratios": {"r": 3.0, "s": 2.0}}}]}
    assert not compare(slower, for_this_cpu(ref, "avx2"))[0]    # still a guard there
    assert ref["benchmarks"][0]["extra_info"]["ratios"]["r"] == 10.0  # the loaded reference is not changed


@pytest.mark.ci
def test_ratios_measured_beside_other_work_are_reported_not_judged():
    def measured(share: float) -> dict:
        info = {"ratios": {"engine_vs_baseline": 1.0},
                "other_work": {"cores_held": share * 2, "cores": 2, "share": share, "seconds": 9.0}}
        return {"benchmarks": [{"name": "test_x", "extra_info": info}, {"name": "test_y", "extra_info": {
            "ratios": {"r": 2.0}, "other_work": {"cores_held": 0.0, "cores": 2, "share": 0.0, "seconds": 9.0}}}]}
    reference = {"benchmarks": [{"name": "test_x", "extra_info": {"ratios": {"engine_vs_baseline": 3.0}}},
                                {"name": "test_y", "extra_info": {"ratios": {"r": 2.0}}}]}
    assert not compare.compare(measured(0.0), reference)[0]           # quiet: a 67% fall fails
    assert not compare.compare(measured(compare.BUSY_SHARE), reference)[0]
    passed, lines = compare.compare(measured(0.5), reference)         # one of 2 cores held by others
    assert passed and any("not judged: other processes held 1.00 of its 2 cores" in line for line in lines)
    assert lines[-1].startswith("1 of 2 ratios not judged (1 judged)")
    quiet_but_slow = measured(0.5)
    quiet_but_slow["benchmarks"][1]["extra_info"]["ratios"]["r"] = 1.0
    assert not compare.compare(quiet_but_slow, reference)[0]          # the quiet benchmark is still judged


@pytest.mark.ci
def test_other_work_counts_other_processes_not_our_children():
    """Checked against the spinners' own CPU time, so whatever else the machine runs only adds."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from bench.contend import SPIN, busy
    from bench.other_work import OtherWork
    with OtherWork() as ours:
        with busy(1, seconds=30) as children:  # our own spinner: the contended benchmarks' load
            time.sleep(1.5)
            spun = sum(psutil.Process(children[0].pid).cpu_times()[:2])
    assert ours.own_cores * ours.seconds >= 0.9 * spun - 0.05, (spun, ours.record())
    # A spinner whose parent has exited is no descendant of ours: other work, as a neighbour's job.
    orphan = subprocess.run([sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen([sys.executable, "
                             f"'-c', {SPIN.format(seconds=30.0)!r}], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
                             "print(p.pid)"],
                            capture_output=True, text=True, check=True)
    neighbour = psutil.Process(int(orphan.stdout))
    try:
        with OtherWork() as others:
            before = sum(neighbour.cpu_times()[:2])
            time.sleep(1.5)
            spun = sum(neighbour.cpu_times()[:2]) - before
        if spun < 0.3:
            pytest.skip(f"the machine is too busy for a test spinner to run ({spun:.2f} s of 1.5)")
        assert others.cores_held * others.seconds >= 0.9 * spun - 0.05, (spun, others.record())
    finally:
        os.kill(neighbour.pid, signal.SIGKILL)
