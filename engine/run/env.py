"""Where we run: device choice, seeding, versions (recorded in every metrics and bench file)."""
from __future__ import annotations

import logging
import os
import platform
import random
import sys

import numpy as np
import torch

from common.cpu_wait import available_core_ids, available_cores, waits_sleep
from engine.options.config import Config, ConfigError
from engine.run.memory import bound_host_allocator
from engine.run.startup import CUBLAS_DETERMINISTIC_WORKSPACE


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("MEDTRAIN_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def keep_freed_host_memory() -> bool:
    """The CPU host allocator policy every run and benchmark uses (engine/run/memory.py)."""
    return bound_host_allocator()


def busy_cores(cores: set[int], seconds: float = 0.2) -> int:
    """How many of `cores` other work keeps more than half busy, sampled over `seconds`."""
    import psutil  # a declared dependency; only the CPU path needs it
    load = psutil.cpu_percent(interval=seconds, percpu=True)
    return sum(1 for core in cores if core < len(load) and load[core] > 50.0)


def layout_cpu_threads(deterministic: bool = False) -> int:
    """Size torch's intra-op pool from the cores this process may use and sets it; returns it.

    With short OpenMP waits (common/cpu_wait.py: a brief spin, then sleep; the normal case) a
    region whose peer thread is descheduled costs the waiting thread little, and every
    available core still helps when it is free: one thread per core. When torch was loaded
    before the start-up call (common/startup.py) and its threads spin while they wait, a thread
    on a core another process holds stalls every region, so the pool takes only the cores that
    are not busy now (the figures: bench/results/host-memory-threads.md). Not in a
    `deterministic` run: reductions split by thread count (torch's and the native kernels'), so
    a pool sized by the load of the moment would change its float results from run to run.
    """
    cores = set(available_core_ids())
    # Processes of one torchrun share the machine's cores (torchrun itself sets OMP_NUM_THREADS).
    share = max(1, len(cores) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))
    if os.environ.get("OMP_NUM_THREADS"):
        threads, why = torch.get_num_threads(), "OMP_NUM_THREADS set by the user"
    elif waits_sleep():
        threads, why = share, "OpenMP waits spin briefly, then sleep"
    elif deterministic:
        threads, why = share, "--train.deterministic: the same pool whatever the load"
    else:
        busy = busy_cores(cores)
        threads = max(1, min(share, len(cores) - busy))
        why = (f"OpenMP threads spin while waiting (torch was imported before common.startup.start(), or "
               f"OMP_WAIT_POLICY is set); {busy} of {len(cores)} cores busy now")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    # debug, not info: an option error must stay the one line on stderr (tests/engine/test_engine_config.py)
    logging.getLogger("medtrain.env").debug("CPU: %d torch threads on %d available cores (%s)", threads, len(cores), why)
    return threads


def prepare_cpu(deterministic: bool = False) -> None:
    """What a CPU run does once before its loaders and model: allocator policy, thread layout."""
    keep_freed_host_memory()
    layout_cpu_threads(deterministic)


def pick_device(cfg: Config) -> torch.device:
    """The training device; on the CPU also sets the host allocator and the thread layout."""
    device = _pick_device(cfg)
    if device.type == "cpu":
        prepare_cpu(cfg.train.deterministic)
    return device


def _pick_device(cfg: Config) -> torch.device:
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible here; use --device auto or cpu")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cpu" and cfg.train.cuda_graph:
        raise ConfigError("--cuda-graph needs a CUDA GPU; drop the flag on the CPU")
    return torch.device(want)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
            # The entry points set it at start-up (engine/run/startup.py); here it may be too late.
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                logging.getLogger("medtrain.env").warning(
                    "--train.deterministic: CUBLAS_WORKSPACE_CONFIG set after CUDA started; cuBLAS may already "
                    "have its workspace (set it before the process starts)")
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC_WORKSPACE
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    # Both ways: the flag is process-wide, and a run after a deterministic one in the same process
    # (a notebook, the in-process tests) would otherwise inherit it, with its other CPU kernels.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {available_cores()} cores)"


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    # Installed-package metadata, never an import: importing ffcv sets torch to 1 thread for the
    # whole process (ffcv/pipeline/compiler.py), which slowed and changed the numerics of later runs.
    from importlib import metadata
    for key, dists in (("torchvision", ("torchvision",)), ("triton", ("triton",)),
                       ("dali", ("nvidia-dali-cuda120", "nvidia-dali-cuda130")), ("ffcv", ("ffcv",))):
        for dist in dists:
            try:
                out[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                pass
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
    return out
