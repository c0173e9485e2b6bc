"""The seeds' notebook CNN: three conv blocks and a dropout classifier.

Adaptive pooling before the classifier (the notebooks flatten a fixed 128 px map into an
8.5M-parameter linear layer) makes it work at any input size, 28 px included.
"""
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


def build(num_classes: int, image_size: int, in_channels: int = 3, dropout: float = 0.25) -> nn.Module:
    return nn.Sequential(
        _block(in_channels, 32), _block(32, 64), _block(64, 128),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(128 * 16, 256), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(256, num_classes))
