"""On a GPU the metrics and TTA run where the buffers live and agree with the CPU figures."""
import pytest
import torch
from torch import nn

from engine.score.tta import TTA
from engine.score.metrics import summarize
from kernels.confusion import confusion_matrix


@pytest.mark.gpu
def test_summary_on_cuda_equals_cpu_bootstrap_included():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (3000,), generator=g)
    probs = (torch.randn(3000, 6, generator=g) + 1.5 * torch.eye(6)[labels]).softmax(1)
    classes = [str(i) for i in range(6)]
    cpu = summarize(confusion_matrix(labels, probs.argmax(1), 6), probs, labels, classes, bootstrap=500)
    gl, gp = labels.cuda(), probs.cuda()
    gpu = summarize(confusion_matrix(gl, gp.argmax(1), 6), gp, gl, classes, bootstrap=500)
    assert cpu.keys() == gpu.keys()
    for key in cpu:
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-5, abs=1e-6), key


@pytest.mark.gpu
def test_tta_on_cuda_equals_cpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    x = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # compare arithmetic, not TF32 rounding
    try:
        with torch.no_grad():
            cpu = TTA(model)(x).softmax(1)
            gpu = TTA(model.cuda())(x.cuda()).softmax(1).cpu()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert torch.allclose(cpu, gpu, atol=1e-4)
