"""Training-mode BatchNorm -> 2x2 max pool -> ReLU fused on the CPU, as an autograd Function.

The arithmetic is in kernels/native/bn_pool_relu.c (why fusing pays, and the argmax rule).
Here: the per-channel algebra between its passes, in float64 on C-length vectors. With
y = relu(gamma * (pool(z) - mean) * invstd + beta), gamma >= 0, and n values per channel:

    d_beta  = sum(g),  d_gamma = sum(g * (pool(z) - mean) * invstd)    (g: grad where y > 0)
    d_mean  = -a * d_beta,  d_var = -invstd^2 * gamma * d_gamma / 2    (a = gamma * invstd)
    grad_z  = a * g at each window's argmax  +  c2 * z + c1,  c2 = 2 d_var / n,  c1 = d_mean / n - c2 * mean

tests/kernels/test_bn_pool_relu_cpu.py checks values and gradients against PyTorch's own
batch_norm, max_pool2d and relu, ties and odd sizes included.
"""
from __future__ import annotations

import ctypes

import torch

from kernels import native_build

_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_SIGNATURES = {
    "stats_pool": [_PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, ctypes.c_int],
    "affine_relu": [_PTR, _PTR, _PTR, _PTR, _I64, _I64, ctypes.c_int],
    "backward_reduce": [_PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64, ctypes.c_int],
    "backward_input": [_PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, ctypes.c_int],
}
_functions: dict[tuple[str, torch.dtype], ctypes._CFuncPtr] | None = None


def _kernels() -> dict | None:
    global _functions
    if _functions is None:
        lib = native_build.load_native("bn_pool_relu")
        if lib is None:
            return None
        _functions = {}
        for name, argtypes in _SIGNATURES.items():
            for dtype, suffix in _SUFFIX.items():
                fn = getattr(lib, f"{name}_{suffix}")
                fn.argtypes, fn.restype = argtypes, None
                _functions[(name, dtype)] = fn
    return _functions


def native_available() -> bool:
    return _kernels() is not None


def supports(dtype: torch.dtype, height: int, width: int) -> bool:
    """Shapes and types the kernels take (the caller also needs channels_last CPU tensors)."""
    return dtype in _SUFFIX and height >= 2 and width >= 2 and native_available()


def _p(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


class BNPoolReLU(torch.autograd.Function):
    """(z, gamma >= 0, beta, eps) -> (relu(bn(pool(z))), batch mean, biased batch variance)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float):
        k = _kernels()
        n_, c_, h_, w_ = z.shape
        threads = torch.get_num_threads()
        pooled = torch.empty((n_, c_, h_ // 2, w_ // 2), dtype=z.dtype, memory_format=torch.channels_last)
        sums = torch.zeros(2 * c_, dtype=torch.float64)
        k["stats_pool", z.dtype](_p(z), _p(pooled), _p(sums), n_, c_, h_, w_, threads)
        count = n_ * h_ * w_
        mean = sums[:c_] / count
        var = (sums[c_:] / count - mean * mean).clamp_min_(0)
        invstd = (var + eps).rsqrt()
        a = gamma.detach().double() * invstd
        b = beta.detach().double() - mean * a
        out = torch.empty_like(pooled)
        a32, b32 = a.float(), b.float()  # named: a temporary's memory could be freed before the call reads it
        k["affine_relu", z.dtype](_p(pooled), _p(out), _p(a32), _p(b32), pooled.numel() // c_, c_, threads)
        ctx.save_for_backward(z, pooled, out, gamma)
        ctx.stats = (mean, invstd, count)
        mean, var = mean.float(), var.float()
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, _grad_mean, _grad_var):
        k = _kernels()
        z, pooled, out, gamma = ctx.saved_tensors
        mean, invstd, count = ctx.stats
        n_, c_, h_, w_ = z.shape
        threads = torch.get_num_threads()
        grad_out = grad_out.to(z.dtype).contiguous(memory_format=torch.channels_last)
        sums = torch.zeros(2 * c_, dtype=torch.float64)
        mean32, invstd32 = mean.float(), invstd.float()
        k["backward_reduce", z.dtype](_p(grad_out), _p(out), _p(pooled), _p(mean32), _p(invstd32), _p(sums),
                                      pooled.numel() // c_, c_, threads)
        d_beta, d_gamma = sums[:c_], sums[c_:]
        g = gamma.detach().double()
        a = g * invstd
        c2 = 2 * (-0.5 * invstd * invstd * g * d_gamma) / count
        c1 = -a * d_beta / count - c2 * mean
        a32, c1_32, c2_32 = a.float(), c1.float(), c2.float()
        # The gradient overwrites z, which nothing needs after this (the conv saved its input,
        # not its output): no fresh full-size tensor, whose page faults cost more than the
        # kernel on the CPU (+45 ms at 128 px, batch 128). The version bump turns a second
        # backward through a retained graph into autograd's in-place error instead of garbage.
        k["backward_input", z.dtype](_p(z), _p(grad_out), _p(out), _p(z), _p(a32), _p(c1_32), _p(c2_32),
                                     n_, c_, h_, w_, threads)
        torch.autograd.graph.increment_version(z)
        return z, d_gamma.to(gamma.dtype), d_beta.to(gamma.dtype), None
