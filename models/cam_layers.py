"""Which layer Grad-CAM reads for each architecture: the last convolutional block, whose
feature map still has a spatial layout and the most class-specific features.

`cam_target_layers(model, name)` takes the registry name the checkpoint stores. Each rule
names the block before global pooling (its output, after the block's activation):
- seedcnn: the third conv block (in eval mode its plain conv-BN-pool-ReLU layers run; the
  fused CPU kernel runs only in training, models/fused_block.py);
- resnet9 / resnet9_small: the last residual block;
- resnet18 / resnet50 (torchvision): `layer4[-1]`;
- efficientnet_b0 (torchvision): `features[-1]`, the 1x1 conv head before pooling;
- timm/<name>: the last stage timm itself reports in `feature_info`, else the last Conv2d.
A model without convolutions (mlp) has no map to show: ConfigError.
"""
from __future__ import annotations

from torch import nn

from common.errors import ConfigError


def _last_conv(model: nn.Module) -> nn.Module | None:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def _timm_layer(model: nn.Module) -> nn.Module | None:
    info = getattr(model, "feature_info", None)
    if info:
        name = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
        return model.get_submodule(name)
    return _last_conv(model)


def _last_module_of(model: nn.Module, kind: type) -> nn.Module | None:
    found = [m for m in model.children() if isinstance(m, kind)]
    return found[-1] if found else None


def cam_target_layers(model: nn.Module, name: str) -> list[nn.Module]:
    """The layer(s) whose activations and gradients Grad-CAM combines, for registry model `name`."""
    from models.metadata import MetadataFusion
    if isinstance(model, MetadataFusion):
        model = model.backbone
    if name == "seedcnn":
        from models.fused_block import ConvBNPoolReLU
        layer = _last_module_of(model, ConvBNPoolReLU)
    elif name.startswith("resnet9"):
        from models.resnet9 import Residual
        layer = _last_module_of(model, Residual)
    elif name in ("resnet18", "resnet50"):
        layer = model.layer4[-1]
    elif name == "efficientnet_b0":
        layer = model.features[-1]
    elif name.startswith("timm/"):
        layer = _timm_layer(model)
    else:
        layer = None
    if layer is None:
        raise ConfigError(f"--model {name}: no convolutional layer to take a Grad-CAM map from "
                          "(saliency needs a CNN: seedcnn, resnet9, resnet18/50, efficientnet_b0, timm CNNs)")
    return [layer]
