"""Where a training run's time goes: device utilisation, data waiting, top kernels.

`python -m bench.profile --data PATH [train options] --seconds S [--warmup-steps W]
[--profile-steps P]` runs in three phases:

1. warm-up (W steps: compile, cuDNN autotune, the loader's first batches), not measured;
2. S seconds of training while a background thread samples GPU utilisation and memory
   through NVML (`import pynvml`, package nvidia-ml-py) every 100 ms; reported: images/s,
   utilisation mean/median/p10, memory, and the share of wall time the loop spent blocked
   in the loader's `next()` (host time; with an asynchronous GPU the host runs ahead, so
   this is the time the data path, not the device queue, held the loop up);
3. P steps under `torch.profiler`: a Chrome trace (`trace.json.gz`) and a table of the
   top kernels by self device time (self CPU time without a GPU), outside the measured window.

Without a GPU or without NVML it says so on stderr and in the JSON and samples CPU
utilisation with psutil instead; it never fails for lack of NVML. Everything lands in
`--out` (default runs/profile-<timestamp>): profile.json, top_kernels.txt, trace.json.gz;
the summary is also printed as one JSON line.
"""
from __future__ import annotations

from common.startup import start

start()  # first, before the imports below can load torch (common/startup.py)

import gzip
import os
import shutil
import statistics
import sys
from dataclasses import dataclass
import threading
import time
from datetime import datetime
from pathlib import Path

import torch

from common.options import opt
from bench.record import environment, print_line, sync, train_options_cli, write_json
from engine.options.config import Config, ConfigError
from engine.run.build import build

# ----------------------------------------------------------------------------- sampling


class UtilisationSampler(threading.Thread):
    """Samples (time, utilisation %, memory MiB) in the background: NVML on a GPU, else psutil."""

    def __init__(self, device: torch.device, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval, self.samples, self._stop_event = interval, [], threading.Event()
        self.source, self.note, self._read = "none", "", None
        if device.type == "cuda":
            self._open_nvml(device)
        else:
            self.note = "no GPU: this run is on the CPU, so there is no GPU utilisation to sample"
        if self._read is None:
            self._open_psutil()

    def _open_nvml(self, device: torch.device) -> None:
        try:
            import pynvml
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self._nvml_index(device))
            pynvml.nvmlDeviceGetUtilizationRates(handle)
        except Exception as exc:  # NVMLError_LibraryNotFound, ImportError, no permission: all mean "no NVML"
            self.note = f"no NVML ({type(exc).__name__}: {exc}): GPU utilisation cannot be sampled"
            return

        def read():
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu  # % of the last period with a kernel running
            return float(util), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
        self.source, self._read = "nvml", read

    @staticmethod
    def _nvml_index(device: torch.device) -> int:
        # NVML numbers all GPUs; CUDA numbers only the visible ones.
        index = device.index or 0
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if index < len(visible) and visible[index].strip().isdigit():
            return int(visible[index])
        return index

    def _open_psutil(self) -> None:
        try:
            import psutil
        except ImportError:
            self.note += "; psutil missing too: no utilisation figures"
            return
        process = psutil.Process()
        psutil.cpu_percent(None)  # the first call only starts the interval

        def read():
            return psutil.cpu_percent(None), process.memory_info().rss / 2**20
        self.source, self._read = "psutil", read
        self.note += "; reporting CPU utilisation (psutil, all cores) and process memory instead"

    def run(self) -> None:
        while self._read is not None and not self._stop_event.wait(self.interval):
            util, mem = self._read()
            self.samples.append((time.perf_counter(), util, mem))

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=2)

    def summary(self, start: float, end: float) -> dict:
        window = [(u, m) for t, u, m in self.samples if start <= t <= end]
        if not window:
            return {"source": self.source, "samples": 0}
        util = sorted(u for u, _ in window)
        return {"source": self.source, "samples": len(window),
                "utilisation_mean": statistics.fmean(util), "utilisation_median": statistics.median(util),
                "utilisation_p10": util[len(util) // 10], "memory_mib_max": max(m for _, m in window)}


# ----------------------------------------------------------------------------- training


class Batches:
    """Endless batches across epochs, timing how long each `next()` keeps the loop waiting."""

    def __init__(self, loader):
        self.loader, self.epoch, self.wait = loader, 0, 0.0
        self.it = iter(loader)

    def next(self):
        t0 = time.perf_counter()
        try:
            batch = next(self.it)
        except StopIteration:
            self.epoch += 1
            self.loader.set_epoch(self.epoch)
            self.it = iter(self.loader)
            batch = next(self.it)
        self.wait += time.perf_counter() - t0
        return batch


def _top_kernels(prof, on_gpu: bool, rows: int = 15) -> tuple[str, list[dict]]:
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    averages = prof.key_averages()
    try:
        table = averages.table(sort_by=key, row_limit=rows)
    except (AttributeError, KeyError, ValueError):  # older name for the device column
        key = "self_cuda_time_total" if on_gpu else key
        table = averages.table(sort_by=key, row_limit=rows)
    events = sorted(averages, key=lambda e: getattr(e, key, 0), reverse=True)[:rows]
    top = [{"name": e.key, "calls": e.count, "self_us": float(getattr(e, key, 0))} for e in events]
    return table, top


def profile(cfg: Config, seconds: float, warmup_steps: int, profile_steps: int) -> dict:
    run = build(cfg, out=cfg.run.out or f"runs/profile-{datetime.now():%Y%m%d-%H%M%S}", splits=("train",))
    cfg, ds, device, trainer, out = run.cfg, run.dataset, run.device, run.trainer, run.out
    name, why, loader = run.loader_name, run.loader_reason, run.loaders["train"]
    sampler = UtilisationSampler(device)
    if sampler.note:
        print(f"bench.profile: {sampler.note.lstrip('; ')}", file=sys.stderr)
    sampler.start()
    batches = Batches(loader)

    # -- 1. warm-up --------------------------------------------------------------------------
    t_warm = time.perf_counter()
    for _ in range(warmup_steps):
        trainer.train_step(*batches.next())
    sync(device)
    warmup_seconds = time.perf_counter() - t_warm

    # -- 2. the measured window --------------------------------------------------------------
    trainer.reset_accumulators()
    batches.wait, steps = 0.0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:  # host clock only: no device sync per step
        trainer.train_step(*batches.next())
        steps += 1
    seen = trainer.read_accumulators()["seen"]  # sync point: end of the window
    end = time.perf_counter()
    window = end - start
    utilisation = sampler.summary(start, end)
    data_wait = batches.wait

    # -- 3. profiler trace -------------------------------------------------------------------
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(profile_steps):
            trainer.train_step(*batches.next())
        sync(device)
    sampler.stop()
    table, top = _top_kernels(prof, device.type == "cuda")
    (out / "top_kernels.txt").write_text(table + "\n")
    raw = out / "trace.json"
    prof.export_chrome_trace(str(raw))
    with open(raw, "rb") as src, gzip.open(out / "trace.json.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()

    result = {
        "benchmark": "profile", **environment(device),
        "config": {"data": cfg.data.path, "dataset": ds.name, "model": cfg.model.name, "image_size": cfg.data.image_size,
                   "batch_size": cfg.data.batch_size, "loader": name, "loader_reason": why, "amp": cfg.train.amp,
                   "amp_dtype": cfg.train.amp_dtype, "compile": cfg.train.compile, "cuda_graph": cfg.train.cuda_graph,
                   "seconds": seconds, "warmup_steps": warmup_steps, "profile_steps": profile_steps},
        "gpu": sampler.source == "nvml",
        "note": sampler.note.lstrip("; ") or "GPU utilisation sampled through NVML every 100 ms",
        "utilisation": utilisation,
        "images_per_second": seen / window,
        "steps": steps,
        "window_seconds": window,
        "warmup_seconds": warmup_seconds,
        "data_wait_share": data_wait / window,
        "top_kernels": top,
        "files": {"trace": str(out / "trace.json.gz"), "top_kernels": str(out / "top_kernels.txt")},
    }
    if device.type == "cuda":
        result["cuda_max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    write_json(out / "profile.json", result)
    return result


def _run(own: dict, cfg: Config) -> dict:
    if own["seconds"] <= 0 or own["warmup_steps"] < 0 or own["profile_steps"] < 1:
        raise ConfigError("--seconds must be > 0, --warmup-steps >= 0 and --profile-steps >= 1")
    return profile(cfg, own["seconds"], own["warmup_steps"], own["profile_steps"])


@dataclass
class Options:
    seconds: float = opt(20.0, help="seconds of training sampled for utilisation")
    warmup_steps: int = opt(5, help="untimed steps first (compile, autotune, the loader's first batches)")
    profile_steps: int = opt(5, help="steps recorded under torch.profiler")


def main(argv: list[str] | None = None) -> int:
    code, result = train_options_cli(argv, __doc__, Options, "bench.profile", _run)
    if result is None:
        return code
    print_line({k: v for k, v in result.items() if k != "top_kernels"})
    u = result["utilisation"]
    what = "GPU" if result["gpu"] else "CPU"
    print(f"{result['images_per_second']:.0f} img/s; {what} utilisation mean {u.get('utilisation_mean', float('nan')):.0f}% "
          f"(median {u.get('utilisation_median', float('nan')):.0f}%); data wait {100 * result['data_wait_share']:.0f}% "
          f"of the loop; {result['note']}; files in {Path(result['files']['trace']).parent}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
