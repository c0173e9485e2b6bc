"""torchvision ResNet / EfficientNet, with stems adapted to small (<= 64 px) inputs.

At 28 px the ImageNet stem (stride-2 conv + max-pool) leaves a 7x7 map after two layers;
MedMNIST practice (and its published baselines) uses a stride-1 3x3 stem and no pool.
"""
from torch import nn
from torchvision import models as tvm

SMALL = 64


def _resnet(factory, num_classes, image_size, in_channels, dropout):
    model = factory(weights=None, num_classes=num_classes)
    if image_size <= SMALL or in_channels != 3:
        stride = 1 if image_size <= SMALL else 2
        model.conv1 = nn.Conv2d(in_channels, 64, 3 if stride == 1 else 7, stride, 1 if stride == 1 else 3, bias=False)
        if image_size <= SMALL:
            model.maxpool = nn.Identity()
    if dropout > 0:
        model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
    return model


def resnet18(num_classes, image_size, in_channels=3, dropout=0.0):
    return _resnet(tvm.resnet18, num_classes, image_size, in_channels, dropout)


def resnet50(num_classes, image_size, in_channels=3, dropout=0.0):
    return _resnet(tvm.resnet50, num_classes, image_size, in_channels, dropout)


def efficientnet_b0(num_classes, image_size, in_channels=3, dropout=0.2):
    model = tvm.efficientnet_b0(weights=None, num_classes=num_classes, dropout=dropout)
    if image_size <= SMALL or in_channels != 3:
        stem = model.features[0][0]
        model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, 1 if image_size <= SMALL else 2, 1, bias=False)
    return model
