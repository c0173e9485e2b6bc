"""Max pooling that keeps no argmax indices between forward and backward.

`nn.MaxPool2d` in training saves its input and an int64 index per output element for the
backward pass: at 8 bytes an element the indices are twice the pooled float map (a large
share of the seed CNN's saved activations at 224 px: docs/cpu.md). `LeanMaxPool2d`
saves only the input and recomputes the indices in the backward pass with the same kernel, so
the gradient is exactly PyTorch's own, ties included. The price is one more pooling pass,
memory-bound and small beside the step (docs/cpu.md). Cheaper-looking alternatives were measured and rejected: saving one int8 window
position per output needs an int64 division per element in eager PyTorch (several times the
pooling itself on the CPU). It has no parameters or buffers: state dicts are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _MaxPoolRecomputingIndices(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        ctx.args = (kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(x)
        return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        kernel_size, stride, padding, dilation, ceil_mode = ctx.args
        _, indices = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
        grad_in = torch.ops.aten.max_pool2d_with_indices_backward(
            grad_out, x, kernel_size, stride, padding, dilation, ceil_mode, indices)
        return grad_in, None, None, None, None, None


def _pair(value) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [value, value]


class LeanMaxPool2d(nn.MaxPool2d):
    """`nn.MaxPool2d` (without `return_indices`) whose backward recomputes the argmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.return_indices or not (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)  # inference, or indices asked for: nothing to save
        stride = self.stride if self.stride is not None else self.kernel_size
        return _MaxPoolRecomputingIndices.apply(x, _pair(self.kernel_size), _pair(stride), _pair(self.padding),
                                                _pair(self.dilation), self.ceil_mode)
