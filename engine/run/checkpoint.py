"""Checkpoints: written atomically, read with `weights_only=True` (a pickle that would run
code is refused), one file per run holding both the selected weights and the full training
state for an exact resume.

Layout of `checkpoint.pt`:
  model          uncompiled state_dict of the selected (best validation) weights
  classes, config, image_size, model_name
  state          model/optimizer/scaler/EMA/trainer counters/RNG states/epoch/step (resume)
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from common.atomic import atomic_write_bytes
from engine.options.config import ConfigError

NAME = "checkpoint.pt"


def save(run_dir: str | Path, payload: dict) -> Path:
    buf = io.BytesIO()
    torch.save(payload, buf)  # serialise first: a failure here never touches the old file
    path = Path(run_dir) / NAME
    atomic_write_bytes(path, lambda fh: fh.write(buf.getbuffer()))  # a full disk: WriteError, old file kept
    return path


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / NAME
    if not path.exists():
        raise ConfigError(f"{path}: no checkpoint here; expected a run folder with {NAME}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; all mean "refused"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: refused or unreadable checkpoint ({type(exc).__name__}: {first[:160]})") from None


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
