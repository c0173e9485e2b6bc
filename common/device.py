"""Device helpers shared by the engine and the benchmarks."""
from __future__ import annotations

import torch


def sync(device: torch.device) -> None:
    # Sync point: a timer may stop only once the device has finished the work it times.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
