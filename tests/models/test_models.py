import pytest
import torch

from models.registry import MODELS, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("size", [28, 72])
def test_every_model_runs_forward_and_backward(name, size):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, image_size=size)
    x = torch.randn(2, 3, size, size).contiguous(memory_format=torch.channels_last)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)) if name != "mlp" else None
    if conv is not None:
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_pretrained_local_weights_load_and_head_is_skipped(tmp_path):
    src = build_model("resnet18", 5, 28)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = build_model("resnet18", 7, 28, pretrained=str(tmp_path / "w.pt"))
    assert torch.equal(dst.conv1.weight, src.conv1.weight)


def test_unknown_model_suggests():
    from engine.options.config import ConfigError
    with pytest.raises(ConfigError, match="did you mean resnet18"):
        build_model("resnt18", 3, 28)
