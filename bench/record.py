"""What every benchmark figure carries: device, versions, command, config; and fair timing.

Absolute times on a shared machine drift 20-40% between repeats, so benchmarks that compare
two things (engine vs baseline, compiled vs eager) time them in alternating rounds inside one
process and report the ratio of medians: drift hits both sides of a ratio alike.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from common.atomic import atomic_write_json
from common.device import sync  # noqa: F401  (the bench CLIs import it from here)
from engine.run.env import versions
from engine.run.memory import peak_memory

REPO = Path(__file__).resolve().parents[1]


def device_kind(device: torch.device | str | None = None) -> str:
    """Short key naming the class of machine a figure belongs to: 'cpu' or e.g. 'nvidia-h100'."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    for kind in ("h200", "h100", "a100", "l40s", "l4", "a10g", "v100", "t4"):
        if kind in name:
            return f"nvidia-{kind}"
    return "nvidia-" + name.replace("nvidia", "").strip().split()[0]


def git_commit() -> str:
    """HEAD's short hash, with "+dirty" when tracked files differ from it: a figure taken on
    uncommitted code must not be credited to the commit before it."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                 capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() or "unknown"
        return commit + ("+dirty" if commit != "unknown" and changed.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def environment(device: torch.device | str | None = None) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return {"device": name, "device_kind": device_kind(device), "versions": versions(),
            "host": platform.node(), "commit": git_commit(), "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}




def cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its reaped children (DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class RoundTimer:
    """Times each variant once per `round()`, alternating the order; a variant returns images done.

    Besides wall time it records CPU seconds (process + reaped worker processes): images per
    CPU-second moves less than wall time when other jobs share the machine (docs/benchmarks.md).
    """

    def __init__(self, variants: dict[str, Callable[[], int]], device: torch.device):
        self.variants, self.device, self.rounds = variants, device, 0
        self.per_round: dict[str, list[float]] = {n: [] for n in variants}
        self.per_cpu_second: dict[str, list[float]] = {n: [] for n in variants}

    def round(self) -> None:
        names = list(self.variants)
        for name in (names if self.rounds % 2 == 0 else names[::-1]):  # neither side always goes first
            sync(self.device)
            t0, c0 = time.perf_counter(), cpu_seconds()
            images = self.variants[name]()
            sync(self.device)
            self.per_round[name].append(images / max(time.perf_counter() - t0, 1e-9))
            self.per_cpu_second[name].append(images / max(cpu_seconds() - c0, 1e-9))
        self.rounds += 1

    def results(self) -> dict[str, dict]:
        """Per variant: images/s of every round and their median, images per CPU-second likewise."""
        return {n: {"rounds": v, "images_per_second": statistics.median(v),
                    "images_per_cpu_second": statistics.median(self.per_cpu_second[n])}
                for n, v in self.per_round.items()}


def interleaved(variants: dict[str, Callable[[], int]], rounds: int, device: torch.device) -> dict[str, dict]:
    timer = RoundTimer(variants, device)
    for _ in range(rounds):
        timer.round()
    return timer.results()


def attach(benchmark, result: dict, tolerances: dict | None = None) -> dict:
    """Put a result (device, versions, config, figures, ratios) into pytest-benchmark's JSON.

    `tolerances` (ratio name -> allowed fall) widens the compare guard for a noisy ratio.
    """
    benchmark.extra_info.update(with_memory(result))
    if tolerances:
        benchmark.extra_info["tolerances"] = tolerances
    return result


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    atomic_write_json(path, payload)
    return path


def with_memory(payload: dict) -> dict:
    """The payload plus this process's peak memory (`memory.peak_rss_mb`, `memory.peak_device_mb`),
    the same keys as metrics.json; a figure the payload already holds is kept."""
    return peak_memory("cuda" if torch.cuda.is_available() else "cpu") | payload


def print_line(payload: dict) -> None:
    """The CLIs' contract: one JSON line on stdout (logs go to stderr), with peak memory."""
    print(json.dumps(with_memory(payload), sort_keys=True, default=str), flush=True)


def train_options_cli(argv: list[str] | None, doc: str, own, prog: str,
                      run: Callable[[dict, object], dict]) -> tuple[int, dict | None]:
    """The shared `main` of the bench CLIs that take train options: help, this tool's own
    options (the fields of the dataclass `own`, common/options.py), the resolved train config
    (progress bar off), one error line with status 2.
    Returns (exit status, `run(own_values, cfg)`'s result or None)."""
    import dataclasses

    from common.cli import run_main, suggest
    from common.options import take, usage
    from engine.options.config import parse_args, config_usage as train_usage
    from engine.run.env import setup_logging

    box = []

    def action(args: list[str]) -> None:
        values, _, rest = take(args, own, prog, suggest)
        cfg = parse_args(rest + ["--train.progress", "off"]).config
        setup_logging()
        box.append(run(dataclasses.asdict(values), cfg))

    def help_text() -> str:
        return usage(prog, doc.strip().split("\n\n", 1)[-1], own, "train options (as engine.train):\n"
                     + train_usage().split("\n", 2)[2], line=f"python -m {prog} [options] [train options]")

    code = run_main(action, argv, help_text)
    return code, (box[0] if box else None)
