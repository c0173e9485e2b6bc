"""A pixel MLP: the MedMNIST baseline for tiny images (pooled to 28 px first at larger sizes)."""
from torch import nn


def build(num_classes: int, image_size: int, in_channels: int = 3, dropout: float = 0.1) -> nn.Module:
    side = min(image_size, 28)
    return nn.Sequential(nn.AdaptiveAvgPool2d(side), nn.Flatten(),
                         nn.Linear(in_channels * side * side, 512), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(512, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes))
