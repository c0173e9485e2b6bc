"""How far the golden run's figures move when only the CPU's instruction set changes.

`python -m bench.isa_spread --data dermamnist28.npz --out DIR [--variants a,b] [--epochs 3]`
runs the golden test's command (tests/engine/test_engine_golden.py: the dermamnist preset,
deterministic) once per variant, each a set of environment variables that narrows what
PyTorch's and oneDNN's kernels and the native C kernel may use: the float summation order a
different CPU would give. It writes DIR/<variant>.json (the history rows and test metrics)
and prints, per figure, the largest absolute difference between variants that share the
native kernels' setting (JSON, one line): the spread the golden test's tolerances come from.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from common.cli import run_main, suggest
from common.options import opt, parse, usage
from common.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("lr", "train.loss", "train.accuracy", "val.accuracy", "val.balanced_accuracy", "val.auc_macro",
           "val.log_loss")
TEST_FIGURES = ("test.accuracy", "test.balanced_accuracy", "test.auc_macro", "test.log_loss")
_NARROW = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MEDTRAIN_NATIVE_MARCH": "x86-64-v2"}
_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MEDTRAIN_NATIVE_MARCH": "x86-64-v3"}
# name -> environment; "native" is the machine as it is.
ISA_VARIANTS = {
    "off-native": {"MEDTRAIN_NATIVE_KERNELS": "off"},
    "off-avx2": {"MEDTRAIN_NATIVE_KERNELS": "off"} | _AVX2,
    "off-aten-default": {"MEDTRAIN_NATIVE_KERNELS": "off", "ATEN_CPU_CAPABILITY": "default"},
    "off-onednn-sse41": {"MEDTRAIN_NATIVE_KERNELS": "off", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "off-narrow": {"MEDTRAIN_NATIVE_KERNELS": "off"} | _NARROW,
    "on-native": {"MEDTRAIN_NATIVE_KERNELS": "on"},
    "on-avx2": {"MEDTRAIN_NATIVE_KERNELS": "on"} | _AVX2,
    "on-march-x86-64": {"MEDTRAIN_NATIVE_KERNELS": "on", "MEDTRAIN_NATIVE_MARCH": "x86-64"},
    "on-narrow": {"MEDTRAIN_NATIVE_KERNELS": "on"} | _NARROW,
}


def run_variant(name: str, data: Path, out: Path, epochs: int) -> dict:
    env = os.environ | ISA_VARIANTS[name] | {"WANDB_MODE": "disabled", "MEDTRAIN_CACHE": str(out / "cache"),
                                         "MEDTRAIN_KERNEL_CACHE": str(out / "kernels")}
    run = out / name
    cmd = [sys.executable, "-m", "engine.train", "--preset", "dermamnist", "--data", str(data),
           "--train.deterministic", "true", "--epochs", str(epochs), "--out", str(run), "--train.progress", "off",
           "--wandb", "disabled", "--device", "cpu"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise ConfigError(f"variant {name} failed: {done.stderr.strip().splitlines()[-1:]}")
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    metrics = json.loads((run / "metrics.json").read_text())
    result = {"variant": name, "env": ISA_VARIANTS[name],
              "history": [{k: row[k] for k in (*FIGURES, "train.class_histogram")} for row in rows],
              "test": {k: metrics[k] for k in TEST_FIGURES}}
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    return result


def spread(results: list[dict]) -> dict:
    """Per figure (epoch-indexed), the max |a - b| over pairs of results."""
    out: dict[str, float] = {}
    for fig in FIGURES:
        for epoch in range(len(results[0]["history"])):
            values = [r["history"][epoch][fig] for r in results]
            out[f"{fig}@{epoch}"] = max(values) - min(values)
    for fig in TEST_FIGURES:
        values = [r["test"][fig] for r in results]
        out[fig] = max(values) - min(values)
    return out


@dataclass
class Options:
    data: str = opt("", path=True, required=True, help="the DermaMNIST npz (dermamnist28.npz)")
    out: str = opt("", path=True, required=True, help="folder for one JSON per variant (reused when present)")
    variants: str = opt(",".join(ISA_VARIANTS), help="comma-separated names from ISA_VARIANTS")
    epochs: int = opt(3, ge=1, help="epochs of each golden-command run")


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv, lambda: usage("bench.isa_spread", __doc__.splitlines()[0], Options))


def _main(argv: list[str]) -> int:
    args = parse(argv, Options, "bench.isa_spread", suggest)[0]
    args.data, args.out = Path(args.data), Path(args.out)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in ISA_VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(ISA_VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        cached = args.out / f"{name}.json"
        results.append(json.loads(cached.read_text()) if cached.exists() else run_variant(name, args.data, args.out,
                                                                                           args.epochs))
    summary = {}
    for kernels in ("off", "on"):
        group = [r for r in results if r["variant"].startswith(kernels + "-")]
        if len(group) > 1:
            summary[kernels] = spread(group)
    print(json.dumps({"variants": names, "spread": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
