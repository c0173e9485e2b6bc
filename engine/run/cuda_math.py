"""Math settings for CUDA runs: TF32 matmuls and cuDNN autotuning, set once before the model runs.

cuDNN convolutions use TF32 by default, but float32 matmuls (linear layers, attention) do not:
`set_float32_matmul_precision("high")` lets Ampere and later GPUs run them on tensor cores
(about 8x the float32 rate on an H100, a 10-bit mantissa like cuDNN's TF32 convolutions).
`cudnn.benchmark` picks the fastest convolution algorithm per shape, which the fixed batch
shape makes a one-time cost; `--train.deterministic` keeps it off (autotuning may pick a
different algorithm per run). Nothing changes on the CPU.
"""
from __future__ import annotations

import torch


def configure(device: torch.device, deterministic: bool) -> None:
    if device.type != "cuda":
        return
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.benchmark = not deterministic
