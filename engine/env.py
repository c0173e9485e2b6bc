"""Where we run: device choice, seeding, versions (recorded in every metrics and bench file)."""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import random
import sys

import numpy as np
import torch

from engine.config import Config, ConfigError


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("MEDTRAIN_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
KEEP_FREED_BELOW = 1 << 30


def keep_freed_host_memory() -> bool:
    """Stop glibc from handing every large freed tensor back to the kernel.

    Above 32 MiB glibc serves each allocation with a fresh mmap and unmaps it on free, so a
    CPU batch or activation of 64 x 3 x 224 x 224 floats page-faults on every step (a third of
    the CPU augmentation's time when measured: docs/benchmarks.md). Raising both thresholds makes freed
    blocks reusable (PyTorch's CPU tuning guide gets the same from jemalloc/tcmalloc). Costs
    resident memory that stays at its peak. Linux glibc only; elsewhere a no-op (False).
    """
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BELOW)) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BELOW))
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False


def pick_device(cfg: Config) -> torch.device:
    """The training device; on the CPU also tunes the host allocator (see above)."""
    device = _pick_device(cfg)
    if device.type == "cpu":
        keep_freed_host_memory()
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
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


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
