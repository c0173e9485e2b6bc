"""Cost of one training image on this device: a short timed run of the real step.

`seconds_per_image` builds the model at a candidate size, runs one warm-up step (allocation,
cuDNN autotuning) and then as many steps as fit in about `seconds` (keeping the fastest), forward + backward +
AdamW update on random inputs, and returns wall seconds per image. It is what the plan
divides its time budget by; loader and evaluation costs are a margin added by engine/plan.py.
"""
from __future__ import annotations

import time

import torch

from models.registry import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_image(model_name: str, size: int, num_classes: int, device: torch.device, batch: int,
                      seconds: float = 1.0, give_up_after: float = 0.0) -> float:
    """Seconds per image of the fastest warm step. `give_up_after` > 0 returns the warm-up
    estimate alone when that single step already costs more per image than it."""
    model = build_model(model_name, num_classes, size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    amp = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()
    _sync(device)  # sync point: calibration, before training
    warm = (time.perf_counter() - t0) / batch
    if give_up_after and warm > give_up_after:
        return warm
    # The fastest step, not the mean: on a shared machine other processes only ever add time,
    # and the plan should size the run for the device, not for a moment's contention.
    best, start = float("inf"), time.perf_counter()
    for _ in range(200):
        t0 = time.perf_counter()
        step()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start >= seconds:
            break
    return best / batch
