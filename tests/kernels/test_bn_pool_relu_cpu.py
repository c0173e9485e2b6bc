"""The fused CPU BN -> 2x2 max pool -> ReLU (kernels/native/bn_pool_relu.c) against PyTorch's layers."""
import logging

import pytest
import torch
from torch import nn

from kernels import bn_pool_relu_cpu, native_build
from models.fused_block import ConvBNPoolReLU
from models.seedcnn import notebook_block

pytestmark = pytest.mark.skipif(not bn_pool_relu_cpu.native_available(),
                                reason="no C compiler here: the fused CPU kernel cannot be built (eager path runs)")


def _notebook(block: ConvBNPoolReLU, dtype=torch.float64) -> nn.Sequential:
    """The same conv and BN, as the notebooks order them, in float64: the reference."""
    ref = notebook_block(block[0].in_channels, block[0].out_channels)
    ref.load_state_dict(block.state_dict())
    return ref.to(dtype)


def _block(seed: int, cin: int = 5, cout: int = 16) -> ConvBNPoolReLU:
    torch.manual_seed(seed)
    block = ConvBNPoolReLU(cin, cout)
    with torch.no_grad():  # trained-looking BN: negative scales included, which turn a max pool into a min pool
        block[1].weight.normal_()
        block[1].bias.normal_()
        block[1].weight[block[1].weight.abs() < 0.05] = 0.5
    return block


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("size", [28, 33, 7, 2, (9, 4)])
@pytest.mark.parametrize("flat_region", [False, True])
def test_values_gradients_and_running_stats_are_pytorchs(size, flat_region):
    height, width = (size, size) if isinstance(size, int) else size
    block = _block(height * 7 + flat_region)
    ref = _notebook(block)
    x = torch.randn(6, 5, height, width)
    if flat_region:  # identical conv outputs side by side: ties in every window of the region
        x[:, :, : height // 2] = 0.5
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x64 = x.detach().double().requires_grad_(True)
    out, out_ref = block(x), ref(x64)
    grad = torch.randn_like(out_ref)
    out.backward(grad.float())
    out_ref.backward(grad)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert _rel(out, out_ref) < 1e-5
    assert _rel(x.grad, x64.grad) < 1e-5
    assert _rel(block[0].weight.grad, ref[0].weight.grad) < 1e-4
    assert _rel(block[1].weight.grad, ref[1].weight.grad) < 1e-5
    assert _rel(block[1].bias.grad, ref[1].bias.grad) < 1e-5
    assert _rel(block[1].running_mean, ref[1].running_mean) < 1e-5
    assert _rel(block[1].running_var, ref[1].running_var) < 1e-5
    assert block[1].num_batches_tracked.item() == 1


def test_nan_propagates_as_pytorchs_pool_does():
    block = _block(3)
    ref = _notebook(block, torch.float32)
    x = torch.randn(2, 5, 8, 8).contiguous(memory_format=torch.channels_last)
    block[0].weight.data[0, 0, 1, 1] = float("nan")
    ref[0].weight.data.copy_(block[0].weight.data)
    out, out_ref = block(x), ref(x)
    assert torch.equal(out.isnan(), out_ref.isnan())


def test_bf16_autocast_is_as_close_to_fp32_as_pytorchs_own_bf16():
    block = _block(11, 8, 32)
    ref32 = _notebook(block, torch.float32)
    ref16 = _notebook(block, torch.float32)
    x = torch.randn(16, 8, 32, 32).contiguous(memory_format=torch.channels_last)
    grads = {}
    for name, model, amp in (("fused", block, True), ("eager", ref16, True), ("fp32", ref32, False)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        out.float().square().mean().backward()
        grads[name] = (out.float().detach().double(), model[0].weight.grad.double(), model[1].weight.grad.double())
    for i in range(3):
        fused_err = _rel(grads["fused"][i], grads["fp32"][i])
        eager_err = _rel(grads["eager"][i], grads["fp32"][i])
        assert fused_err < 2 * eager_err + 1e-3, (i, fused_err, eager_err)


def test_momentum_none_is_a_cumulative_average_as_in_batchnorm():
    block = _block(5)
    block[1].momentum = None
    ref = _notebook(block)
    ref[1].momentum = None
    for step in range(3):
        x = torch.randn(4, 5, 6, 6) + step
        block(x.contiguous(memory_format=torch.channels_last))
        ref(x.double())
    assert _rel(block[1].running_mean, ref[1].running_mean) < 1e-5
    assert _rel(block[1].running_var, ref[1].running_var) < 1e-5


def test_off_the_kernel_it_is_the_plain_sequential_exactly():
    """Eval, no-grad, NCHW inputs and float64 take the eager layers: the same numbers bit for bit."""
    block = _block(7)
    plain = nn.Sequential(*block)  # the very same child modules
    x = torch.randn(3, 5, 10, 10)
    with torch.no_grad():
        assert torch.equal(block(x.contiguous(memory_format=torch.channels_last)),
                           plain(x.contiguous(memory_format=torch.channels_last)))
    block.eval()
    assert torch.equal(block(x), plain(x))
    block.train()
    assert torch.equal(block(x), plain(x))  # NCHW
    assert not block._fusable(x) and block._fusable(x.contiguous(memory_format=torch.channels_last))
    assert not block._fusable(x.double().contiguous(memory_format=torch.channels_last))


def test_sync_batchnorm_or_another_pool_takes_the_eager_layers():
    x = torch.randn(2, 5, 8, 8).contiguous(memory_format=torch.channels_last)
    block = _block(2)
    assert block._fusable(x)
    block[1] = nn.SyncBatchNorm(16)  # what --dist.sync_bn makes of it: statistics must cross ranks
    assert not block._fusable(x)
    block = _block(2)
    block[2] = nn.MaxPool2d(3, 2, 1)
    assert not block._fusable(x)


def test_under_torch_compile_the_plain_layers_are_traced_in_one_graph(monkeypatch):
    calls = []
    forward = bn_pool_relu_cpu.BNPoolReLU.forward
    monkeypatch.setattr(bn_pool_relu_cpu.BNPoolReLU, "forward",
                        staticmethod(lambda *args: calls.append(1) or forward(*args)))
    block = _block(4)
    model = nn.Sequential(block, nn.Flatten(), nn.Linear(16 * 4 * 4, 3))
    x = torch.randn(4, 5, 8, 8).contiguous(memory_format=torch.channels_last)
    eager = torch.autograd.grad(model(x).square().sum(), block[0].weight)[0]
    assert len(calls) == 1
    torch._dynamo.reset()
    graphs = []
    compiled = torch.compile(model, backend=lambda gm, inputs: graphs.append(gm) or gm.forward)
    assert torch.allclose(torch.autograd.grad(compiled(x).square().sum(), block[0].weight)[0], eager, atol=1e-5)
    assert len(calls) == 1 and len(graphs) == 1  # traced as conv, BN, pool, ReLU: no kernel call, no break
    torch._dynamo.reset()


def test_a_second_backward_through_a_retained_graph_is_refused_not_wrong():
    # the backward writes the gradient over the conv output it saved
    block = _block(9)
    x = torch.randn(2, 5, 8, 8).contiguous(memory_format=torch.channels_last)
    out = block(x).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        out.backward()


def test_without_a_compiler_it_says_so_once_and_the_block_runs_eagerly(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("MEDTRAIN_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native_build, "_loaded", {})
    monkeypatch.setattr(bn_pool_relu_cpu, "_functions", None)
    with caplog.at_level(logging.WARNING, logger="medtrain.kernels"):
        assert not bn_pool_relu_cpu.native_available()
        assert not bn_pool_relu_cpu.native_available()
    assert len([r for r in caplog.records if "eager PyTorch runs instead" in r.getMessage()]) == 1
    block = _block(1)
    x = torch.randn(2, 5, 8, 8).contiguous(memory_format=torch.channels_last)
    assert not block._fusable(x)
    assert torch.equal(block(x), nn.Sequential(*block)(x))


def test_the_library_is_built_once_and_reused_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDTRAIN_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(native_build, "_loaded", {})
    assert native_build.load_native("bn_pool_relu") is not None
    built = list(tmp_path.glob("bn_pool_relu-*.so"))
    assert len(built) == 1 and not list(tmp_path.glob("*.so.*")) and not list(tmp_path.glob("tmp*"))
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native_build, "_loaded", {})
    assert native_build.load_native("bn_pool_relu") is not None
    assert [p.stat().st_mtime_ns for p in tmp_path.glob("bn_pool_relu-*.so")] == [stamp]
