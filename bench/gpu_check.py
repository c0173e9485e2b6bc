"""`make gpu-check`: everything a lent GPU machine should measure, in one command.

Runs with the machine's own python3 (no venv, no internet) from the repository root with
PYTHONPATH=., reading data from `.gpu/` (`make gpu-pack`) and falling back to synthetic
JPEGs where it is absent. Steps, each a subprocess with its own log and time limit, so a
slow or failing step loses only its own figures:

  tests    the gpu-marked tests (pytest -m gpu tests)
  e2e      bench/test_e2e.py -m gpu: ResNet-50 AMP epoch, engine vs baseline
  profile  bench.profile: ResNet-50 AMP channels-last from HAM JPEGs, nvjpeg loader
  tta      bench/test_tta.py -m gpu: DermaMNIST-28 to 0.75 test accuracy
  step     bench/test_step.py -m gpu: eager / compiled / CUDA graph / compiled + CUDA graph,
           seedcnn@28 bs512 and resnet50@224 AMP channels-last
  loaders  bench/test_loaders.py -m gpu: nvjpeg and tensor loaders vs baseline
  kernels  bench/test_kernels.py -m gpu
  compare  bench.compare of the merged benchmark JSON with reference-<device kind>.json

Everything lands in $OUT (default bench/results/gpu-latest): <step>.log, bench-<step>.json,
bench-gpu.json (all benchmark JSON merged), profile/, figures.md, figures.png and
summary.json (per step: exit status, seconds, timed out; plus the headline figures).
`--steps a,b` (or GPU_STEPS=a,b for make) runs a subset; `--budget S` caps the whole run
(default 570 s, under the device tool's 600 s per command); steps run in the order above
and those the budget leaves out are listed as skipped, with the command that runs them.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.cli import run_main
from common.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
BENCH_STEPS = ("e2e", "tta", "step", "loaders", "kernels")
# Run order = priority: the device tool allows 600 s per command, which all steps may not fit
# in (compiling ResNet-50 alone takes minutes); what the budget leaves out is reported as
# skipped and runs in a second call: make gpu-check GPU_STEPS=step,loaders,kernels,compare
ALL_STEPS = ("tests", "e2e", "profile", "tta", "step", "loaders", "kernels", "compare")
# Seconds each step may take at most (the overall budget may cut them shorter).
LIMITS = {"tests": 120, "e2e": 100, "profile": 100, "tta": 60, "step": 240, "loaders": 45, "kernels": 45, "compare": 30}


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


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "bench" / "results" / "gpu-latest"))
    ap.add_argument("--steps", default=os.environ.get("GPU_STEPS") or ",".join(ALL_STEPS),
                    help=f"comma-separated subset of {','.join(ALL_STEPS)}")
    ap.add_argument("--budget", type=float, default=570.0, help="seconds for the whole run")
    args = ap.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in ALL_STEPS]
    if unknown:
        raise ConfigError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(ALL_STEPS)}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OUT=str(out), WANDB_MODE="disabled")
    start, summary = time.perf_counter(), {"steps": {}, "python": sys.executable, "out": str(out),
                                            "data": {"ham_subset": (REPO / ".gpu/ham_subset/labels.csv").exists(),
                                                     "dermamnist": (REPO / ".gpu/dermamnist28.npz").exists()}}
    for step in steps:
        left = args.budget - (time.perf_counter() - start)
        if step == "compare":
            why = compare_precondition(out)
            if why:
                summary["steps"][step] = {"skipped": why}
                print(f"gpu-check: compare skipped: {why}", flush=True)
                continue
        if left < 10:
            summary["steps"][step] = {"skipped": f"time budget of {args.budget:.0f} s spent; "
                                                 f"run it with: make gpu-check GPU_STEPS={step}"}
            continue
        limit = min(LIMITS[step], left)
        t0 = time.perf_counter()
        print(f"gpu-check: {step} (limit {limit:.0f} s)", flush=True)
        with open(out / f"{step}.log", "w") as log:
            rc, timed_out = run_step(command(step, out), env, log, limit)
        summary["steps"][step] = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "timed_out": timed_out}
        print(f"gpu-check: {step} -> {'timed out' if timed_out else f'exit {rc}'} in "
              f"{summary['steps'][step]['seconds']} s", flush=True)
    merged = merge_benchmarks(out)
    figure_inputs = [str(p) for p in (merged, out / "profile" / "profile.json") if p and Path(p).exists()]
    if figure_inputs:
        subprocess.run([sys.executable, "-m", "bench.plot", *figure_inputs, "--md", str(out / "figures.md"),
                        "--png", str(out / "figures.png")], cwd=REPO, env=env, timeout=60)
    summary["figures"] = headline(out)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps(summary["steps"]), flush=True)
    failed = [s for s, r in summary["steps"].items() if r.get("rc") not in (0, None) or r.get("timed_out")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
