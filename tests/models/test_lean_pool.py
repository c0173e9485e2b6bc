"""LeanMaxPool2d: PyTorch's max-pool gradient bit for bit, without saved argmax indices (issue 19)."""
import pytest
import torch
from torch import nn

from engine.run.memory import activation_mb
from models.lean_pool import LeanMaxPool2d
from models.fused_block import ConvBNPoolReLU


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("height,width", [(12, 10), (7, 9), (4, 3)])
@pytest.mark.parametrize("kernel,stride,padding,ceil", [(2, None, 0, False), (3, 2, 1, False), (3, 2, 0, True)])
def test_gradient_is_pytorchs_exactly_ties_and_odd_sizes_included(layout, dtype, height, width, kernel, stride, padding, ceil):
    torch.manual_seed(0)
    # Quantised values behind a ReLU: many exact ties (zeros and repeated levels), where any
    # rule but PyTorch's own argmax would split or misroute the gradient.
    base = torch.relu(torch.randint(-3, 4, (3, 5, height, width)).to(dtype)).contiguous(memory_format=layout)
    results = []
    for pool in (nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil), LeanMaxPool2d(kernel, stride, padding, ceil_mode=ceil)):
        x = base.clone().requires_grad_(True)
        out = pool(x)
        out.backward(torch.arange(out.numel(), dtype=torch.float32).reshape(out.shape).to(dtype))
        results.append((out.detach(), x.grad))
    (out_ref, grad_ref), (out, grad) = results
    assert torch.equal(out, out_ref) and torch.equal(grad, grad_ref)
    assert grad.is_contiguous(memory_format=layout)


def test_it_saves_its_input_but_no_int64_indices():
    x = torch.randn(4, 8, 32, 32, requires_grad=True)
    # activation_mb counts the tensors autograd saves, by storage (shared storage once).
    plain_bytes, lean_bytes = (activation_mb(pool, x) * 2**20 for pool in (nn.MaxPool2d(2), LeanMaxPool2d(2)))
    assert torch.equal(nn.MaxPool2d(2)(x), LeanMaxPool2d(2)(x))
    assert plain_bytes == x.numel() * 4 + 4 * 8 * 16 * 16 * 8
    assert lean_bytes == x.numel() * 4


def test_the_seed_blocks_eager_path_pools_before_its_relu_with_the_notebooks_values_and_gradients():
    torch.manual_seed(0)
    block = ConvBNPoolReLU(3, 4)  # NCHW input: the eager conv-BN-pool-ReLU, not the fused CPU kernel
    notebook = nn.Sequential(block[0], block[1], nn.ReLU(inplace=True), nn.MaxPool2d(2))  # same conv and BN
    x = torch.randn(2, 3, 10, 10)
    grads = []
    for model in (notebook, block):
        model.zero_grad()
        out = model(x)
        out.backward(torch.ones_like(out))
        grads.append((out.detach(), block[0].weight.grad.clone(), block[1].weight.grad.clone()))
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_inference_and_state_dict_are_the_plain_modules():
    pool = LeanMaxPool2d(2)
    assert pool.state_dict() == {} and isinstance(pool, nn.MaxPool2d)
    with torch.no_grad():
        x = torch.randn(1, 2, 6, 6)
        assert torch.equal(pool(x), nn.MaxPool2d(2)(x))


def test_it_compiles_to_the_same_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), LeanMaxPool2d(2), nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    eager = torch.autograd.grad(model(x).sum(), model[0].weight)[0]
    compiled = torch.compile(model, backend="aot_eager")  # traces the autograd.Function; no C++ compiler needed
    assert torch.allclose(torch.autograd.grad(compiled(x).sum(), model[0].weight)[0], eager)
