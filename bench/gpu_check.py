"""`make gpu-check CALL=1|2`: what a lent GPU machine proves, in two calls of under 5 minutes each.

Runs with the machine's own python3 (no venv, no internet) from the repository root, reading data
from `.gpu/` (`make gpu-pack`) and falling back to synthetic JPEGs where it is absent. Each step
is a subprocess with its own log and an enforced limit (bench/gpu_run.py: SIGTERM, then SIGKILL
of its process group), so a slow or failing step loses only its own time and still writes what
it measured. Call 1 proves correctness, so a lease that ends early still says whether the GPU
paths are right; call 2 measures speed. bench/gpu_plan.py holds the steps, their limits and
the reasons for them; docs/gpu.md says what each call proves and how to read what comes back.

What comes back (bench/gpu_results.py): `$OUT/call<N>.summary.json`, `.summary.md` and
`call<N>.tar.gz` (every step's log, JSON and XML, the run folder's small files), rewritten after
every step; the full outputs (checkpoint included) stay in `--work`. stdout ends with the per-step
summary: status, seconds against the limit, the last 20 log lines of each failed step.

`--rehearse` runs the same schedule, packaging and summary on the CPU: CUDA-only steps run their
CPU twin (the gpu-marked tests skip: "needs CUDA"). `--scale F` multiplies every limit and the
budget (the CI test's quick rehearsal). `--steps a,b` runs named steps instead of a call.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import gpu_plan, gpu_results
from bench.gpu_plan import CALL_BUDGET_S, CALLS, LEFT_OUT, REPO, STEPS
from bench.gpu_run import junit_counts, run_step, status
from common.cli import run_main, suggest
from common.options import opt, parse, usage
from common.errors import ConfigError

MIN_STEP_S = 10.0  # below this a step cannot even import torch: listed as not run instead


def merge_benchmarks(work: Path) -> Path | None:
    merged = None
    for step in gpu_plan.BENCH_STEPS:
        path = work / f"bench-{step}.json"
        if path.exists():
            try:
                doc = json.loads(path.read_text())
            except ValueError:
                continue  # a step killed while writing it
            merged = merged or {k: v for k, v in doc.items() if k != "benchmarks"} | {"benchmarks": []}
            merged["benchmarks"] += doc.get("benchmarks", [])
    if merged is None:
        return None
    target = work / "bench-gpu.json"
    target.write_text(json.dumps(merged, indent=2) + "\n")
    return target


def compare_precondition(work: Path) -> str:
    """Why the compare step cannot run ("" when it can)."""
    from bench import compare

    merged = merge_benchmarks(work)
    if merged is None:
        return "no benchmark JSON to compare"
    try:
        kind = compare.recorded_device_kind(compare.load_results(merged))
    except compare.BadInput as exc:
        return str(exc)
    reference = compare.RESULTS / f"reference-{kind}.json"
    if not reference.exists():
        return (f"no {reference.relative_to(REPO)} committed yet; to make this run the reference: "
                f"cp bench-gpu.json (from the archive) {reference.relative_to(REPO)}")
    return ""


def headline(work: Path) -> dict:
    """The figures acceptance asks for, pulled from the step outputs (absent when a step failed)."""
    figures = {}
    merged = work / "bench-gpu.json"
    if merged.exists():
        for bench in json.loads(merged.read_text())["benchmarks"]:
            info = bench.get("extra_info") or {}
            if info.get("benchmark") == "e2e_epoch":
                figures["e2e_engine_vs_baseline"] = info["ratios"]["engine_vs_baseline"]
                figures["e2e_images_per_second"] = info["images_per_second"]
            if info.get("benchmark") == "time_to_accuracy":
                figures["dermamnist_seconds_to_0.75"] = info["seconds_to_target"]
                figures["dermamnist_best_test_accuracy"] = info["best_test_accuracy"]
            if "resnet50" in bench["name"] and "images_per_second" in info:
                figures[f"{bench['name']}.images_per_second"] = info["images_per_second"]
    prof = work / "profile" / "profile.json"
    if prof.exists():
        p = json.loads(prof.read_text())
        figures["profile"] = {"images_per_second": p["images_per_second"], "utilisation": p["utilisation"],
                              "data_wait_share": p["data_wait_share"], "loader": p["config"]["loader"]}
    train_metrics = work / "train" / "metrics.json"
    if train_metrics.exists():
        m = json.loads(train_metrics.read_text())
        figures["train"] = {k: m.get(k) for k in ("test.accuracy", "test.balanced_accuracy", "train.images_per_second",
                                                   "wall_seconds", "device")}
    return figures


def pick_steps(call: str, steps: str | None) -> tuple[str, list[str]]:
    """(label for the result files, steps in order)."""
    if steps:
        chosen = [s.strip() for s in steps.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in STEPS]
        if unknown:
            raise ConfigError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
        return "steps", chosen
    return f"call{call}", list(CALLS[call])


def run_one(name: str, work: Path, env: dict, limit: float, rehearse: bool, summary: dict) -> None:
    if name == "compare":
        why = compare_precondition(work)
        if why:
            summary["steps"][name] = {"skipped": why}
            return
    print(f"gpu-check: {name} (limit {limit:.0f} s)", flush=True)
    result = run_step(gpu_plan.command(name, work, rehearse), REPO, env, work / f"{name}.log", limit)
    result["limit"] = round(limit, 1)
    tests = junit_counts(work / f"{name}.xml")
    if tests is not None:
        result["tests"] = tests
    result["status"] = status(result)
    summary["steps"][name] = result
    print(f"gpu-check: {name} -> {result['status']} in {result['seconds']} s", flush=True)


def run_steps(steps: list[str], work: Path, out: Path, env: dict, args, summary: dict) -> None:
    start = time.perf_counter()
    budget = args.budget * args.scale
    for name in steps:
        left = budget - (time.perf_counter() - start)
        limit = min(STEPS[name].limit_s * args.scale, left)
        if limit < min(MIN_STEP_S * args.scale, STEPS[name].limit_s * args.scale):
            summary["not_run"][name] = (f"the call's budget of {budget:.0f} s was spent; run it with: "
                                        f"make gpu-check STEPS={name}")
            continue
        run_one(name, work, env, limit, args.rehearse, summary)
        deliver(work, out, summary, start)  # a lease that ends now still leaves what ran


def deliver(work: Path, out: Path, summary: dict, start: float) -> str:
    """Archive, summary.json and summary.md into $OUT; returns the human summary."""
    label = summary["label"]
    summary["seconds"] = round(time.perf_counter() - start, 1)
    failed = {n for n, r in summary["steps"].items() if r.get("status", "ok") != "ok"}
    try:
        summary["archive"] = gpu_results.write_archive(work, out / f"{label}.tar.gz", failed)
    except (OSError, RuntimeError) as exc:
        summary["problems"].append(f"archive not written: {type(exc).__name__}: {exc}")
    ours = {f"{name}.{kind}" for name in ("call1", "call2", "steps") for kind in ("summary.json", "summary.md", "tar.gz")}
    entries = [p.name for p in out.iterdir() if ".tmp" not in p.name] + [n for n in summary["result_files"]]
    others = sorted(set(entries) - ours)
    if (others or len(set(entries)) > gpu_plan.RESULT_FILES_MAX) and \
            not any(p.startswith("$OUT also holds") for p in summary["problems"]):
        summary["problems"].append(f"$OUT also holds {', '.join(sorted(set(entries))[:8])}: the machine returns 8 "
                                   "files, any 8; give each call an empty $OUT (or only the other call's 3 files)")
    text = gpu_results.human_summary(summary, work)
    gpu_results.write_summary(out, label, summary, text)
    return text


def new_summary(label: str, steps: list[str], args, out: Path, work: Path) -> dict:
    limits = {n: STEPS[n].limit_s * args.scale for n in steps}
    return {"label": label, "rehearse": args.rehearse, "scale": args.scale, "planned": steps, "steps": {},
            "not_run": {}, "problems": [], "python": sys.executable, "out": str(out), "work": str(work),
            "budget_s": args.budget * args.scale, "limits_sum_s": sum(limits.values()),
            "plan": {n: {"limit_s": limits[n], "setup_s": STEPS[n].setup_s, "gpu_s": STEPS[n].gpu_s,
                         "window_s": STEPS[n].window_s, "proves": STEPS[n].proves} for n in steps},
            "left_out_for_time": {} if label == "steps" else LEFT_OUT[label[-1]],
            "result_files": [f"{label}.summary.json", f"{label}.summary.md", f"{label}.tar.gz"],
            "gpu_figures": "measured" if not args.rehearse else "unmeasured: CPU rehearsal",
            "data": {"ham_subset": (gpu_plan.GPU_DATA / "ham_subset/labels.csv").exists(),
                     "dermamnist": (gpu_plan.GPU_DATA / "dermamnist28.npz").exists()}}


def child_env(work: Path) -> dict:
    # The repository first, then what was there (the CI test's package blocker, a user's path);
    # OUT: the bench fixtures' artifact folder goes to the work folder, never to $OUT itself.
    path = os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return dict(os.environ, PYTHONPATH=path, OUT=str(work / "artifacts"), WANDB_MODE="disabled",
                MEDTRAIN_CACHE=os.environ.get("MEDTRAIN_CACHE") or str(work / "cache"))


@dataclass
class Options:
    out: str = opt("", help="results folder; '' = $OUT, else bench/results/gpu-latest")
    work: str = opt("", help="where steps write everything; '' = a new folder under /tmp")
    call: str = opt("", choices=("",) + tuple(sorted(CALLS)),
                    help="1: correctness (gpu tests, a real compiled + graphed run), 2: speed; '' = $CALL, else 1")
    steps: str = opt("", help=f"comma-separated subset of {','.join(STEPS)} instead of a call; '' = $GPU_STEPS")
    budget: float = opt(CALL_BUDGET_S, gt=0.0, help="seconds for all steps together")
    rehearse: bool = opt(False, help="on the CPU: CUDA-only steps run their CPU twin or say 'needs CUDA'")
    scale: float = opt(1.0, gt=0.0, le=1.0, help="multiplies every limit and the budget (the CI test's quick rehearsal)")


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("bench.gpu_check", __doc__.split("\n")[0], Options))


def _main(argv: list[str]) -> int:
    args = parse(argv, Options, "bench.gpu_check", suggest)[0]
    # The environment fills what the command line left empty (the device machine sets them).
    args.out = args.out or os.environ.get("OUT") or str(REPO / "bench" / "results" / "gpu-latest")
    args.call = args.call or os.environ.get("CALL") or "1"
    args.steps = args.steps or os.environ.get("GPU_STEPS") or None
    label, steps = pick_steps(args.call, args.steps)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix=f"gpu-check-{label}-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = new_summary(label, steps, args, out, work)
    try:
        run_steps(steps, work, out, child_env(work), args, summary)
    finally:
        for name in steps:  # interrupted (Ctrl-C, a kill): say what never ran
            if name not in summary["steps"] and name not in summary["not_run"]:
                summary["not_run"][name] = "the check stopped before it"
        try:
            summary["figures"] = headline(work)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            summary["problems"].append(f"headline figures unreadable: {type(exc).__name__}: {exc}")
        text = deliver(work, out, summary, start)
        print(text, flush=True)
    failed = [n for n, r in summary["steps"].items() if r.get("rc") not in (0, None) or r.get("timed_out")]
    return 1 if failed or summary["not_run"] else 0


if __name__ == "__main__":
    sys.exit(main())
