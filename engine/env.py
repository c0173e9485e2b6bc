"""Where we run: device choice, seeding, versions (recorded in every metrics and bench file)."""
from __future__ import annotations

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


def pick_device(cfg: Config) -> torch.device:
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
    for name in ("torchvision", "triton", "nvidia.dali", "ffcv"):
        try:
            module = __import__(name, fromlist=["__version__"])
            out[name.split(".")[-1]] = getattr(module, "__version__", "?")
        except Exception:
            pass
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
    return out
