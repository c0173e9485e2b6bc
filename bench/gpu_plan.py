"""The GPU check's schedule: which steps each call runs, their limits and why, their commands.

Every limit is at least 1.5x (CPU-side set-up + expected GPU time) of its step, compile and
start-up counted, and each call's limits sum to at most CALL_BUDGET_S, so a call ends inside the
device tool's 300 s with room for the machine's own start-up (tests/bench/test_gpu_check_plan.py
checks both). `setup_s` is measured: CPU seconds (user+sys) of the step's command on the 2-core
CPU machine, where every gpu-marked test skips, so what remains is imports, pytest's collection
and the dataset scan (docs/gpu.md has the figures and the command). `gpu_s` is an ESTIMATE until
a GPU has run it: cold inductor compiles, cuDNN autotuning, the timed windows (`window_s`, the
seconds of measurement the step contains), the rest of the step's GPU work.

Steps that need CUDA have a CPU twin for `--rehearse`: the same pytest command (its gpu-marked
tests skip, "needs CUDA"), or the same program on the CPU with a CPU loader and a smaller shape.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU_DATA = REPO / ".gpu"
CALL_BUDGET_S = 270.0
RESULT_FILES_MAX = 6       # directly under $OUT, both calls together (the machine returns 8)
RESULT_FILE_MAX_BYTES = 8 * 2**20  # half the 16 MiB the machine returns per file
MARGIN = 1.5


@dataclass(frozen=True)
class Step:
    name: str
    limit_s: float
    setup_s: float      # measured CPU-side set-up (see the module doc)
    gpu_s: float        # expected GPU-side time, compiles and timed windows included (estimate)
    window_s: float     # seconds of timed measurement inside gpu_s
    proves: str


STEPS = {s.name: s for s in (
    Step("tests", 140, 24, 66, 0, "every gpu-marked test under tests/: kernels vs CPU twins, captured vs eager "
         "step, nvJPEG behind a busy stream, DDP on one GPU (one seed-CNN compile, ~20-40 s)"),
    Step("train", 125, 16, 64, 0, "a real run from JPEGs, plan off, explicit recipe: nvjpeg + compile (train graph "
         "and eval twin) + CUDA graph + AMP, 2 epochs of a seed CNN at 64 px, report written"),
    Step("step", 77, 14, 37, 4, "step throughput: seed CNN eager / graph / compiled+graph (one compile), "
         "ResNet-50 AMP eager / graph"),
    Step("loaders", 45, 14, 15, 12, "nvjpeg and tensor loaders vs the baseline, 2 s x 2 rounds each"),
    Step("e2e", 45, 14, 15, 6, "ResNet-50 AMP epoch from JPEGs, engine vs baseline, 2 rounds"),
    Step("profile", 45, 14, 15, 6, "ResNet-50 AMP channels-last from JPEGs through nvjpeg: utilisation, data "
         "wait, a 3-step trace"),
    Step("tta", 45, 13, 17, 12, "DermaMNIST-28 (dermamnist preset, AMP) to 0.75 test accuracy within 12 s"),
    Step("compare", 10, 2, 0, 0, "the merged benchmark JSON against reference-<device kind>.json"),
    Step("kernels", 45, 14, 15, 0, "Triton kernels vs their torch references (bench/test_kernels.py)"),
    Step("step_compiled", 150, 14, 85, 2, "ResNet-50 compiled + CUDA graph (one cold inductor compile, 60-90 s)"),
)}

CALLS = {"1": ("tests", "train"), "2": ("step", "loaders", "e2e", "profile", "tta", "compare")}

# Left out of each call for time, with how to get it: listed in every summary, never dropped silently.
LEFT_OUT = {
    "1": {"bench gpu tests": "call 2 runs them (make gpu-check CALL=2)",
          "kernels": "make gpu-check STEPS=kernels"},
    "2": {"kernels": "make gpu-check STEPS=kernels",
          "step_compiled": "ResNet-50's cold compile alone is ~60-90 s: make gpu-check STEPS=step_compiled",
          "figures plot": "made afterwards from the archive: python -m bench.plot bench-gpu.json --md figures.md"},
}
BENCH_STEPS = ("e2e", "tta", "step", "loaders", "kernels", "step_compiled")


def _ham() -> Path | None:
    data = GPU_DATA / "ham_subset"
    return data if (data / "labels.csv").exists() else None


def train_command(work: Path, rehearse: bool) -> list[str]:
    """Plan off and every recipe choice explicit: this proves the compiled, captured step from
    JPEG files, not the plan (which would calibrate on the GPU and change the recipe)."""
    ham = _ham()
    data = ["--data", str(ham), "--data.max_samples", "1200"] if ham else \
        ["--data", "synthetic", "--data.synthetic_count", "1200"]
    recipe = ["--run.plan", "off", "--model", "seedcnn", "--image-size", "64", "--batch-size", "128",
              "--epochs", "2", "--optim.name", "adamw", "--lr", "2e-3", "--schedule.name", "cosine",
              "--schedule.warmup_epochs", "0.5", "--sampler.kind", "uniform", "--train.ema", "0",
              "--data.color_constancy", "none", "--amp", "--train.progress", "off",
              "--wandb.mode", "disabled", "--out", str(work / "train")]
    # The CPU twin leaves out compile and capture: a cold inductor compile on the 2 CI cores takes
    # longer than the step's limit (tests/engine/test_engine_compile_tta.py covers it on the CPU).
    device = ["--loader", "plain", "--device", "cpu"] if rehearse else \
        ["--loader", "nvjpeg", "--compile", "--cuda-graph", "--device", "cuda"]
    return [sys.executable, "-m", "engine.train", *data, *device, *recipe]


def profile_command(work: Path, rehearse: bool) -> list[str]:
    ham = _ham()
    data = ["--data", str(ham)] if ham else ["--data", "synthetic"]
    shape = (["--loader", "plain", "--device", "cpu", "--model", "seedcnn", "--image-size", "64",
              "--batch-size", "32"] if rehearse else
             ["--loader", "nvjpeg", "--device", "cuda", "--model", "resnet50", "--image-size", "224",
              "--batch-size", "256", "--amp"])
    phases = ["--seconds", "2", "--warmup-steps", "2", "--profile-steps", "2"] if rehearse else \
        ["--seconds", "6", "--warmup-steps", "5", "--profile-steps", "3"]
    return [sys.executable, "-m", "bench.sigterm_interrupt", "bench.profile", *data, *shape, *phases,
            "--out", str(work / "profile")]


def pytest_command(target: str, work: Path, step: str, *extra: str) -> list[str]:
    # bench.sigterm_interrupt: at the limit SIGTERM ends the session like Ctrl-C, so the JSON of
    # the benchmarks already run and the junit XML of the tests already run are still written.
    return [sys.executable, "-m", "pytest", target, "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
            "-p", "bench.sigterm_interrupt", "--junitxml", str(work / f"{step}.xml"), *extra]


def command(step: str, work: Path, rehearse: bool = False) -> list[str]:
    if step == "tests":
        return pytest_command("tests", work, step)
    if step == "train":
        return train_command(work, rehearse)
    if step == "profile":
        return profile_command(work, rehearse)
    if step == "step":
        return pytest_command("bench/test_step.py", work, step, "-k", "not compiled_gpu",
                              "--benchmark-json", str(work / "bench-step.json"))
    if step == "step_compiled":
        return pytest_command("bench/test_step.py", work, step, "-k", "compiled_gpu",
                              "--benchmark-json", str(work / "bench-step_compiled.json"))
    if step in BENCH_STEPS:
        return pytest_command(f"bench/test_{step}.py", work, step, "--benchmark-json", str(work / f"bench-{step}.json"))
    return [sys.executable, "-m", "bench.compare", str(work / "bench-gpu.json")]
