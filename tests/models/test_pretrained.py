"""Pretrained backbones through the libraries' own caches, never downloaded in tests: a locally
built weights file is put where torchvision / timm look, then loaded."""
from __future__ import annotations

import pytest
import torch

from common.errors import ConfigError
from models.registry import build_model


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_imagenet_weights_from_the_torch_cache(torch_home, name):
    from torchvision.models import get_model, get_model_weights
    from models.pretrained import torch_cache_file
    reference = get_model(name, weights=None)  # random: the test is about where the file is read from
    target = torch_cache_file(get_model_weights(name).DEFAULT.url)
    assert str(target).startswith(str(torch_home))
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), target)
    model = build_model(name, 5, 224, pretrained="imagenet")
    ours, theirs = model.state_dict(), reference.state_dict()
    shared = [k for k in ours if k in theirs and ours[k].shape == theirs[k].shape]
    assert len(shared) > 0.9 * len(ours) and all(torch.equal(ours[k], theirs[k]) for k in shared)
    assert next(p for p in model.parameters() if p.ndim == 4).is_contiguous(memory_format=torch.channels_last)
    out = model(torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last))
    assert out.shape == (2, 5)


def test_offline_without_the_file_is_one_line_naming_it(torch_home, monkeypatch):
    import torch.hub
    def offline(*a, **k):
        raise OSError("no network")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConfigError) as err:
        build_model("resnet18", 3, 64, pretrained="imagenet")
    message = str(err.value)
    assert "\n" not in message and "resnet18-f37072fd.pth" in message and str(torch_home) in message


def test_unknown_imagenet_model_is_refused():
    with pytest.raises(ConfigError, match="no ImageNet weights for seedcnn"):
        build_model("seedcnn", 3, 28, pretrained="imagenet")


def test_timm_model_by_name_with_weights_from_the_hub_cache(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants
    from safetensors.torch import save_file
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError) as err:
        build_model("timm/resnet18", 4, 64, pretrained="imagenet")
    assert "models--timm--resnet18" in str(err.value) and "\n" not in str(err.value)
    reference = timm.create_model("resnet18", pretrained=False)
    folder = tmp_path / "hub" / f"models--{reference.pretrained_cfg['hf_hub_id'].replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, folder / "snapshots" / commit / "model.safetensors")
    model = build_model("timm/resnet18", 4, 64, pretrained="imagenet")
    assert torch.equal(model.conv1.weight, reference.conv1.weight) and model.fc.out_features == 4
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ConfigError, match="timm has no such model"):
        build_model("timm/resnet18x", 4, 64)
