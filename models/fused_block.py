"""conv -> BatchNorm -> 2x2 max pool -> ReLU: one module, fused on the CPU in training.

The children (and so the state dict) are the plain nn.Sequential's; eval, autograd-free
calls, GPUs, torch.compile and anything the CPU kernel does not take run that Sequential as
written. Under torch.compile the layers are traced into the one graph the engine expects (no
graph break; tests/engine/test_engine_runs.py), though on the CPU inductor's own fusion was
no faster than the eager layers where the kernel is faster (figures: docs/cpu.md). In CPU training the block folds the sign of BN's gamma
into the conv weights (a per-channel affine with a negative scale would turn max pooling
into min pooling), so BN's affine is monotonic and commutes with the pool, and hands
BN + pool + ReLU to kernels/bn_pool_relu_cpu.py. Values and gradients are the Sequential's
up to float rounding; the running statistics are updated as nn.BatchNorm2d does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels import bn_pool_relu_cpu
from models.lean_pool import LeanMaxPool2d


def _out_size(size: int, conv: nn.Conv2d, dim: int) -> int:
    k, s, p, d = conv.kernel_size[dim], conv.stride[dim], conv.padding[dim], conv.dilation[dim]
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


class ConvBNPoolReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         LeanMaxPool2d(2), nn.ReLU(inplace=True))

    def _layers_as_built(self) -> bool:
        """The children are still a Conv2d, a plain BatchNorm2d (SyncBatchNorm must synchronize:
        eager), a 2x2 stride-2 max pool and a ReLU: what the kernel computes."""
        conv, bn, pool, relu = self
        pool_2x2 = all(p in (2, (2, 2), [2, 2]) for p in (pool.kernel_size, pool.stride)) and pool.padding in (0, (0, 0))
        return (type(conv) is nn.Conv2d and isinstance(conv.padding, tuple) and type(bn) is nn.BatchNorm2d
                and bn.affine and bn.track_running_stats and isinstance(pool, nn.MaxPool2d) and pool_2x2
                and pool.dilation in (1, (1, 1)) and not pool.ceil_mode and not pool.return_indices
                and isinstance(relu, nn.ReLU))

    def _fusable(self, x: torch.Tensor) -> bool:
        if not (self.training and torch.is_grad_enabled() and x.device.type == "cpu" and x.dim() == 4
                and x.is_contiguous(memory_format=torch.channels_last) and not torch.compiler.is_compiling()
                and len(self) == 4 and self._layers_as_built()):
            return False
        conv = self[0]
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        h, w = _out_size(x.shape[2], conv, 0), _out_size(x.shape[3], conv, 1)
        return x.shape[0] * h * w > 1 and bn_pool_relu_cpu.supports(dtype, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fusable(x):
            return super().forward(x)
        conv, bn = self[0], self[1]
        sign = torch.where(bn.weight.detach() >= 0, 1.0, -1.0).to(bn.weight.dtype)
        bias = conv.bias * sign if conv.bias is not None else None
        z = F.conv2d(x, conv.weight * sign.view(-1, 1, 1, 1), bias, conv.stride, conv.padding, conv.dilation,
                     conv.groups).contiguous(memory_format=torch.channels_last)
        out, mean, var = bn_pool_relu_cpu.BNPoolReLU.apply(z, bn.weight * sign, bn.bias, bn.eps)
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            count = z.numel() // z.shape[1]
            bn.running_mean.lerp_((mean * sign).to(bn.running_mean.dtype), factor)
            bn.running_var.lerp_((var * (count / (count - 1))).to(bn.running_var.dtype), factor)
        return out
