"""`make gpu-check CALL=1|2`: what a lent GPU machine proves, in two calls of under 5 minutes each.

Runs with the machine's own python3 (no venv, no internet) from the repository root with
PYTHONPATH=., reading data from `.gpu/` (`make gpu-pack`) and falling back to synthetic
JPEGs where it is absent. Each step is a subprocess with its own log and an enforced time
limit (its whole process group is killed at the limit), so a slow or failing step loses only
its own figures. The first call proves correctness, so a lease that ends early still says
whether the GPU paths are right; the second measures speed.

  call 1 (correctness)
    tests    the gpu-marked tests: fused augmentation, sampler, confusion and CLAHE against their
             CPU twins, captured vs eager steps under --train.deterministic, nvJPEG decode behind
             a busy stream vs the CPU decode, DALI parity when installed, DDP on one GPU
    train    a short real run from JPEG files: --loader nvjpeg --compile --cuda-graph --amp
  call 2 (speed)
    step     bench/test_step.py -m gpu (seed CNN and ResNet-50: eager / CUDA graph / compiled+graph)
    loaders  bench/test_loaders.py -m gpu: nvjpeg and tensor loaders vs baseline
    e2e      bench/test_e2e.py -m gpu: ResNet-50 AMP epoch, engine vs baseline
    profile  bench.profile: ResNet-50 AMP channels-last from HAM JPEGs, nvjpeg loader
    tta      bench/test_tta.py -m gpu: DermaMNIST-28 to 0.75 test accuracy
    compare  bench.compare of the merged benchmark JSON with reference-<device kind>.json
  (kernels: bench/test_kernels.py -m gpu, in no call; run it with --steps kernels)

Everything lands in $OUT (default bench/results/gpu-latest): <step>.log, bench-<step>.json,
bench-gpu.json, profile/, train/, figures.md/png and summary.json: per step its exit status,
seconds, limit and whether it timed out, the steps that did not run and the command that runs
them, the headline figures. summary.json is rewritten after every step and always at the end
(a failing plot or headline is recorded, never fatal). `--steps a,b` runs a subset instead of a
call; `--budget S` caps the whole run (default 280 s: the device tool's 300 s call plus start).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
import time
from pathlib import Path

from common.cli import run_main, suggest
from common.options import opt, parse, usage
from common.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
BENCH_STEPS = ("e2e", "tta", "step", "loaders", "kernels")
CALLS = {"1": ("tests", "train"), "2": ("step", "loaders", "e2e", "profile", "tta", "compare")}
ALL_STEPS = ("tests", "train", "step", "loaders", "e2e", "profile", "tta", "kernels", "compare")
# Seconds each step may take at most; a call's limits sum to under its 280 s budget. Planned
# from the CPU-side set-up measured on the CI machine (docs/gpu.md) plus compile estimates.
LIMITS = {"tests": 190, "train": 80, "step": 95, "loaders": 35, "e2e": 55, "profile": 45, "tta": 40,
          "kernels": 45, "compare": 10}
DEFAULT_BUDGET = 280.0


def train_command(out: Path) -> list[str]:
    """A real run from JPEG files through the GPU decoder with compile and a captured step."""
    data = REPO / ".gpu" / "ham_subset"
    data_args = (["--data", str(data), "--data.max_samples", "1200"] if (data / "labels.csv").exists()
                 else ["--data", "synthetic", "--data.synthetic_count", "1200"])
    return [sys.executable, "-m", "engine.train", *data_args, "--loader", "nvjpeg", "--model", "seedcnn",
            "--image-size", "64", "--batch-size", "128", "--epochs", "2", "--amp", "--compile", "--cuda-graph",
            "--device", "cuda", "--train.progress", "off", "--wandb", "disabled", "--out", str(out / "train")]


def profile_command(out: Path) -> list[str]:
    data = REPO / ".gpu" / "ham_subset"
    data_args = ["--data", str(data)] if (data / "labels.csv").exists() else ["--data", "synthetic"]
    return [sys.executable, "-m", "bench.profile", *data_args, "--loader", "nvjpeg", "--model", "resnet50",
            "--image-size", "224", "--amp", "--batch-size", "256", "--seconds", "30", "--warmup-steps", "15",
            "--profile-steps", "5", "--out", str(out / "profile")]


def command(step: str, out: Path) -> list[str]:
    py = sys.executable
    if step == "tests":
        return [py, "-m", "pytest", "-m", "gpu", "tests", "-q", "-p", "no:cacheprovider", "--junitxml", str(out / "tests.xml")]
    if step in BENCH_STEPS:
        return [py, "-m", "pytest", f"bench/test_{step}.py", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                "--benchmark-json", str(out / f"bench-{step}.json")]
    if step == "profile":
        return profile_command(out)
    if step == "train":
        return train_command(out)
    return [py, "-m", "bench.compare", str(out / "bench-gpu.json")]


def run_step(cmd: list[str], env: dict, log, limit: float) -> tuple[int | None, bool]:
    """(exit status or None, timed out); a step that overruns is killed with its whole process
    group, DataLoader workers included, so nothing it started keeps the GPU busy for the next."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout=limit), False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None, True


def merge_benchmarks(out: Path) -> Path | None:
    merged, found = None, False
    for step in BENCH_STEPS:
        path = out / f"bench-{step}.json"
        if path.exists():
            doc = json.loads(path.read_text())
            merged = merged or {k: v for k, v in doc.items() if k != "benchmarks"} | {"benchmarks": []}
            merged["benchmarks"] += doc.get("benchmarks", [])
            found = True
    if not found:
        return None
    target = out / "bench-gpu.json"
    target.write_text(json.dumps(merged, indent=2) + "\n")
    return target


def compare_precondition(out: Path) -> str:
    """Why the compare step cannot run ("" when it can)."""
    from bench import compare

    merged = merge_benchmarks(out)
    if merged is None:
        return "no benchmark JSON to compare"
    try:
        kind = compare.device_kind(compare.load(merged))
    except compare.BadInput as exc:
        return str(exc)
    reference = compare.RESULTS / f"reference-{kind}.json"
    if not reference.exists():
        return (f"no {reference.relative_to(REPO)} committed yet; to make this run the reference: "
                f"cp {merged} {reference.relative_to(REPO)}")
    return ""


def headline(out: Path) -> dict:
    """The figures acceptance asks for, pulled from the step outputs (absent when a step failed)."""
    figures = {}
    merged = out / "bench-gpu.json"
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
    prof = out / "profile" / "profile.json"
    if prof.exists():
        p = json.loads(prof.read_text())
        figures["profile"] = {"images_per_second": p["images_per_second"], "utilisation": p["utilisation"],
                              "data_wait_share": p["data_wait_share"], "loader": p["config"]["loader"]}
    figures["public_resnet50_reference_images_per_second_per_h100"] = {"pytorch": 2800, "mlperf_best": 7000}
    return figures


def pick_steps(call: str | None, steps: str | None) -> list[str]:
    if steps:
        chosen = [s.strip() for s in steps.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in ALL_STEPS]
        if unknown:
            raise ConfigError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(ALL_STEPS)}")
        return chosen
    if call not in CALLS:
        raise ConfigError(f"--call must be one of {', '.join(CALLS)} (or give --steps)")
    return list(CALLS[call])


def write_summary(out: Path, summary: dict) -> None:
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    os.replace(tmp, out / "summary.json")


def run_steps(steps: list[str], out: Path, env: dict, budget: float, summary: dict) -> None:
    start = time.perf_counter()
    for step in steps:
        left = budget - (time.perf_counter() - start)
        if step == "compare":
            why = compare_precondition(out)
            if why:
                summary["steps"][step] = {"skipped": why}
                print(f"gpu-check: compare skipped: {why}", flush=True)
                continue
        if left < 10:
            summary["not_run"][step] = f"time budget of {budget:.0f} s spent; run it with: make gpu-check STEPS={step}"
            continue
        limit = min(LIMITS[step], left)
        t0 = time.perf_counter()
        print(f"gpu-check: {step} (limit {limit:.0f} s)", flush=True)
        with open(out / f"{step}.log", "w") as log:
            rc, timed_out = run_step(command(step, out), env, log, limit)
        summary["steps"][step] = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "limit": round(limit),
                                  "timed_out": timed_out}
        print(f"gpu-check: {step} -> {'timed out' if timed_out else f'exit {rc}'} in "
              f"{summary['steps'][step]['seconds']} s", flush=True)
        write_summary(out, summary)  # a lease that ends now still leaves what ran


def figures(out: Path, env: dict, summary: dict) -> None:
    """Plots and headline numbers: recorded when they fail, never fatal to summary.json."""
    merged = merge_benchmarks(out)
    inputs = [str(p) for p in (merged, out / "profile" / "profile.json") if p and Path(p).exists()]
    if inputs:
        try:
            subprocess.run([sys.executable, "-m", "bench.plot", *inputs, "--md", str(out / "figures.md"),
                            "--png", str(out / "figures.png")], cwd=REPO, env=env, timeout=30)
        except subprocess.TimeoutExpired:
            summary["problems"].append("bench.plot timed out after 30 s: no figures.md/png")
    try:
        summary["figures"] = headline(out)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        summary["problems"].append(f"headline figures unreadable: {type(exc).__name__}: {exc}")
    train_metrics = out / "train" / "metrics.json"
    if train_metrics.exists():
        m = json.loads(train_metrics.read_text())
        summary["train"] = {k: m.get(k) for k in ("test.accuracy", "test.balanced_accuracy", "train.images_per_second",
                                                   "loader", "wall_seconds", "device")}


@dataclass
class Options:
    out: str = opt("", help="results folder; '' = $OUT, else bench/results/gpu-latest")
    call: str = opt("", choices=("",) + tuple(sorted(CALLS)),
                    help="1: correctness (tests, a real compiled + graphed run), 2: speed; '' = $CALL, else 1")
    steps: str = opt("", help=f"comma-separated subset of {','.join(ALL_STEPS)} instead of a call; '' = $GPU_STEPS")
    budget: float = opt(DEFAULT_BUDGET, help="seconds for the whole run")


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("bench.gpu_check", __doc__.split("\n")[0], Options))


def _main(argv: list[str]) -> int:
    args = parse(argv, Options, "bench.gpu_check", suggest)[0]
    # The environment fills what the command line left empty (the device machine sets them).
    args.out = args.out or os.environ.get("OUT") or str(REPO / "bench" / "results" / "gpu-latest")
    args.call = args.call or os.environ.get("CALL") or "1"
    args.steps = args.steps or os.environ.get("GPU_STEPS") or None
    steps = pick_steps(args.call, args.steps)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OUT=str(out), WANDB_MODE="disabled")
    start = time.perf_counter()
    summary = {"call": None if args.steps else args.call, "planned": steps, "steps": {}, "not_run": {},
               "problems": [], "python": sys.executable, "out": str(out),
               "data": {"ham_subset": (REPO / ".gpu/ham_subset/labels.csv").exists(),
                        "dermamnist": (REPO / ".gpu/dermamnist28.npz").exists()}}
    try:
        run_steps(steps, out, env, args.budget, summary)
        figures(out, env, summary)
    finally:
        for step in steps:  # interrupted (Ctrl-C, a kill): say what never ran
            if step not in summary["steps"] and step not in summary["not_run"]:
                summary["not_run"][step] = "the check stopped before it"
        summary["seconds"] = round(time.perf_counter() - start, 1)
        write_summary(out, summary)
    print(json.dumps({"steps": summary["steps"], "not_run": summary["not_run"]}), flush=True)
    failed = [s for s, r in summary["steps"].items() if r.get("rc") not in (0, None) or r.get("timed_out")]
    return 1 if failed or summary["not_run"] else 0


if __name__ == "__main__":
    sys.exit(main())
