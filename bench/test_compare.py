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
