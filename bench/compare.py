"""Regression guard: compare a new benchmark result's RATIOS with the committed reference.

`python -m bench.compare NEW.json [--reference FILE] [--tolerance T]` exits 0 when every
reference ratio is matched, 1 when one is more than its tolerance below the reference (or
missing), 2 when a file is unreadable. `--doctor F -o OUT` writes a copy of NEW whose
ratios are F slower (what the self-test of this guard feeds it).

Why ratios: absolute times on shared 2-core machines drift 20-40% between repeats, but a
ratio of two things timed in alternating rounds of one process (engine vs baseline, AMP vs
fp32, ...) moves much less. Every ratio is "higher is better" (the faster thing on top).
A ratio fails when new < reference x (1 - tolerance). The default tolerance, 0.25, sits
between the run-to-run spread of the CI end-to-end ratios and the 30% slowdown the guard must
catch (the spread measured is in docs/benchmarks.md); the reference may state a wider one for
a noisier ratio (`extra_info.tolerances`, e.g. 0.4 for the 2-second loader windows).
Faster than the reference always passes.

The references were taken on an idle machine. Each benchmark records the other work beside it
(bench/other_work.py); where others held more than BUSY_SHARE of its cores, its ratios are
reported but not judged. An engine using every core loses more to a neighbour than a baseline
using fewer, with no change in the code: one busy process beside the 2-core machine took the
e2e ratio 32-41% and even its per-CPU-second twin 16-23% below the reference, so no
tolerance that still catches a 30% regression holds there.

Inputs: pytest-benchmark JSON (`pytest bench --benchmark-json F`: ratios in each
benchmark's `extra_info.ratios`), one JSON result of a bench CLI, or JSON lines of them.
Without --reference the reference is bench/results/reference-<device kind>.json, the kind
read from the new result (cpu, nvidia-h100, ...).
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from common.cli import run_main, suggest
from common.options import opt, parse, usage
from common.errors import ConfigError

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_TOLERANCE = 0.25
# Other work measured idle: 0.000-0.005 of the 2-core machine's cores; one busy process: 0.49.
BUSY_SHARE = 0.1


class BadInput(ConfigError):
    pass


def load_results(path: str | Path, require_ratios: bool = True) -> dict:
    """Any accepted input as {"benchmarks": [{"name", "extra_info": {...}}, ...]}."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        try:
            payload = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}: not JSON or JSON lines ({exc})") from None
    if isinstance(payload, dict) and "benchmarks" in payload:
        return payload
    results = payload if isinstance(payload, list) else [payload]
    if not all(isinstance(r, dict) and ("ratios" in r or not require_ratios) for r in results):
        raise BadInput(f"{path}: no ratios found; expected pytest-benchmark JSON or bench CLI results with 'ratios'")
    return {"benchmarks": [{"name": r.get("name") or r.get("benchmark", f"result{i}"), "extra_info": r}
                           for i, r in enumerate(results)]}


def cpu_kind(cpuinfo: str | None = None) -> str:
    """The instruction-set class a ratio's reference may depend on: amx, avx512 or avx2 (other
    x86 and non-x86 CPUs: avx2's references, the narrowest measured)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return "amx" if "amx_bf16" in flags else "avx512" if "avx512f" in flags else "avx2"


def for_this_cpu(reference: dict, kind: str | None = None) -> dict:
    """The reference as this CPU kind reads it: a benchmark's `extra_info.by_cpu[kind]` (ratios
    and tolerances measured on that kind of CPU) replaces its own where present. A ratio of two
    pipelines can differ by CPU (PIL's decode against a vectorized one), not only by change."""
    kind = kind or cpu_kind()
    out = copy.deepcopy(reference)
    for bench in out["benchmarks"]:
        info = bench.get("extra_info") or {}
        mine = (info.get("by_cpu") or {}).get(kind)
        if mine:
            info["ratios"] = {**info.get("ratios", {}), **mine.get("ratios", {})}
            info["tolerances"] = {**info.get("tolerances", {}), **mine.get("tolerances", {})}
    return out


def ratios(payload: dict) -> dict[str, float]:
    out = {}
    for bench in payload["benchmarks"]:
        for key, value in (bench.get("extra_info") or {}).get("ratios", {}).items():
            if isinstance(value, (int, float)):
                out[f"{bench['name']}.{key}"] = float(value)
    return out


def tolerances(payload: dict) -> dict[str, float]:
    out = {}
    for bench in payload["benchmarks"]:
        for key, value in (bench.get("extra_info") or {}).get("tolerances", {}).items():
            out[f"{bench['name']}.{key}"] = float(value)
    return out


def not_judged(payload: dict) -> dict[str, str]:
    """Ratios of benchmarks that ran beside other work: ratio -> why it is not judged."""
    out = {}
    for bench in payload["benchmarks"]:
        info = bench.get("extra_info") or {}
        other = info.get("other_work") or {}
        if other.get("share", 0.0) <= BUSY_SHARE:
            continue
        why = (f"not judged: other processes held {other['cores_held']:.2f} of its {other['cores']} cores "
               f"(the reference: an idle machine)")
        for key in info.get("ratios", {}):
            out[f"{bench['name']}.{key}"] = why
    return out


def recorded_device_kind(payload: dict) -> str:
    for bench in payload["benchmarks"]:
        kind = (bench.get("extra_info") or {}).get("device_kind")
        if kind:
            return kind
    raise BadInput("the result names no device_kind; pass --reference FILE")


def compare(new: dict, reference: dict, tolerance: float = DEFAULT_TOLERANCE) -> tuple[bool, list[str]]:
    """(passed, report lines)."""
    new_r, ref_r, tol, busy = ratios(new), ratios(reference), tolerances(reference), not_judged(new)
    if not ref_r:
        raise BadInput("the reference holds no ratios")
    lines, passed = [f"{'ratio':58} {'reference':>9} {'new':>9} {'change':>8}  verdict"], True
    for key in sorted(ref_r):
        ref, limit = ref_r[key], tol.get(key, tolerance)
        if key not in new_r:
            passed = False
            lines.append(f"{key:58} {ref:9.3f} {'-':>9} {'':>8}  FAIL: missing from the new result")
            continue
        value = new_r[key]
        change = value / ref - 1
        if key in busy:
            verdict = busy[key]
        elif value < ref * (1 - limit):
            passed, verdict = False, f"FAIL: more than {limit:.0%} below the reference"
        elif value > ref * (1 + limit):
            verdict = f"ok (more than {limit:.0%} faster: consider updating the reference)"
        else:
            verdict = f"ok (within {limit:.0%})"
        lines.append(f"{key:58} {ref:9.3f} {value:9.3f} {change:+8.1%}  {verdict}")
    extra = sorted(set(new_r) - set(ref_r))
    if extra:
        lines.append(f"not in the reference (not guarded): {', '.join(extra)}")
    unjudged = len(busy.keys() & ref_r.keys())
    if unjudged:
        judged = "none judged" if unjudged == len(ref_r) else f"{len(ref_r) - unjudged} judged"
        lines.append(f"{unjudged} of {len(ref_r)} ratios not judged ({judged}): the machine was busy while they "
                     f"ran (extra_info.other_work); rerun on a quiet machine to judge them")
    return passed, lines


def doctor(payload: dict, slower: float) -> dict:
    """A copy whose every ratio has its faster side `slower` (e.g. 0.3 = 30%) slower."""
    out = copy.deepcopy(payload)
    for bench in out["benchmarks"]:
        info = bench.get("extra_info") or {}
        info["ratios"] = {k: v * (1 - slower) for k, v in info.get("ratios", {}).items()}
        info["doctored"] = f"every ratio x {1 - slower:.2f}"
    return out


@dataclass
class Options:
    new: str = opt("", positional=True, required=True, help="new result: pytest-benchmark JSON or bench CLI JSON (lines)")
    reference: str = opt("", help="committed reference; '' = bench/results/reference-<device kind>.json")
    tolerance: float = opt(DEFAULT_TOLERANCE, ge=0.0, help="allowed fall of a ratio")
    doctor: float = opt(-1.0, help="write NEW with every ratio this fraction (0 < F < 1) slower to -o, then exit")
    output: str = opt("", short="o", help="where --doctor writes")


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("bench.compare", __doc__.split("\n\n")[0], Options,
                                               line="python -m bench.compare NEW [options]"))


def _main(argv: list[str]) -> int:
    args, given = parse(argv, Options, "bench.compare", suggest)
    new = load_results(args.new)
    if "doctor" in given:
        if not args.output or not 0 < args.doctor < 1:
            raise BadInput("--doctor F needs 0 < F < 1 and -o OUT")
        Path(args.output).write_text(json.dumps(doctor(new, args.doctor), indent=2) + "\n")
        print(f"wrote {args.output}: every ratio {args.doctor:.0%} slower")
        return 0
    ref_path = Path(args.reference) if args.reference else RESULTS / f"reference-{recorded_device_kind(new)}.json"
    if not ref_path.exists():
        raise BadInput(f"{ref_path}: no reference for this device kind; commit one or pass --reference")
    reference = for_this_cpu(load_results(ref_path))
    passed, lines = compare(new, reference, args.tolerance)
    lines.insert(0, f"references for this CPU kind: {cpu_kind()} (extra_info.by_cpu where measured)")
    print(f"{args.new} vs {ref_path}")
    print("\n".join(lines))
    if not passed:
        print("FAIL: a guarded ratio regressed")
    elif set(ratios(reference)) <= set(not_judged(new)):
        print("NOT JUDGED: every ratio ran beside other work; nothing regressed that could be seen")
    else:
        print("PASS")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
