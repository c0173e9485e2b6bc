"""The one autocast rule: which dtype a forward runs in, for training, evaluation, a restored
checkpoint and the plan's calibration alike.

`--train.amp` off: fp32. `--train.amp_dtype fp16`: fp16 (training adds a GradScaler). `bf16`:
bf16 as asked. `auto`: bf16 only where it is native (CUDA with bf16, a CPU with AVX512-BF16 or
AMX); elsewhere bf16 is emulated and slower than fp32, so the forward stays fp32.
"""
from __future__ import annotations

import torch


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 math is native here: CUDA with bf16 support, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_dtype(amp: bool, requested: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--train.amp` and `--train.amp_dtype`; None = no autocast."""
    if not amp:
        return None
    if requested == "fp16":
        return torch.float16
    if requested == "auto" and not fast_bf16(device):
        return None  # emulated bf16 (e.g. an AVX2-only CPU) runs ~10x slower than fp32
    return torch.bfloat16


def autocast_dtype(cfg, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run with this config (engine/options/config.py's TrainConfig)."""
    return amp_dtype(cfg.train.amp, cfg.train.amp_dtype, device)


def autocast(device: torch.device, dtype: torch.dtype | None, cache: bool = True):
    """The autocast context for `dtype` (None: off). `cache=False` under CUDA graphs: cached
    casts are tensors created outside the step that a replay would not refresh."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache)
