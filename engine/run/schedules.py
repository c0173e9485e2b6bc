"""Learning-rate and EMA-decay schedules as precomputed per-step tables.

A table indexed on the device by a step counter lets a captured CUDA graph replay the
schedule. ReduceLROnPlateau cannot be precomputed: the host decides at epoch end and scales
a device factor (`Plateau`), which the step multiplies in.
"""
from __future__ import annotations

import math

import torch

from engine.options.config import ScheduleConfig


def lr_multipliers(cfg: ScheduleConfig, steps_per_epoch: int, epochs: int) -> torch.Tensor:
    total = max(1, steps_per_epoch * epochs)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    t = torch.arange(total + 1, dtype=torch.float64)  # +1: a resumed counter may read one past
    lo = cfg.min_lr_ratio
    if cfg.name == "onecycle":  # 30% linear up from lo/.. , cosine down to lo
        peak = max(1, int(0.3 * total))
        up = lo + (1 - lo) * t / peak
        down = lo + (1 - lo) * 0.5 * (1 + torch.cos(math.pi * (t - peak) / max(1, total - peak)))
        mult = torch.where(t < peak, up, down)
    elif cfg.name == "cosine":
        progress = ((t - warmup) / max(1, total - warmup)).clamp(0, 1)
        cosine = lo + (1 - lo) * 0.5 * (1 + torch.cos(math.pi * progress))
        mult = torch.where(t < warmup, (t + 1) / max(1, warmup), cosine)
    else:  # constant and plateau: warmup, then flat (plateau scales it at epoch ends)
        mult = torch.where(t < warmup, (t + 1) / max(1, warmup), torch.ones_like(t))
    return mult.clamp(min=0).to(torch.float32)


def ema_decays(decay: float, total_steps: int) -> torch.Tensor:
    """Per-step EMA decay, min(decay, (1 + t) / (10 + t)): early averages follow the weights
    closely instead of remembering the random init. A table (not a formula evaluated in the
    step) so the captured graph replays it from the device step counter."""
    t = torch.arange(max(1, total_steps) + 1, dtype=torch.float64)
    return torch.minimum(torch.full_like(t, decay), (1 + t) / (10 + t)).to(torch.float32)


class Plateau:
    """Host-side ReduceLROnPlateau on a maximised metric; `scale` is the device factor."""

    def __init__(self, cfg: ScheduleConfig, scale: torch.Tensor):
        self.factor, self.patience, self.scale = cfg.plateau_factor, cfg.plateau_patience, scale
        self.best, self.bad = -math.inf, 0

    def update(self, value: float) -> None:
        if value > self.best + 1e-4:
            self.best, self.bad = value, 0
            return
        self.bad += 1
        if self.bad > self.patience:
            self.scale.mul_(self.factor)
            self.bad = 0

    def state_dict(self) -> dict:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad = state["best"], state["bad"]
