"""The seeds' notebook CNN: three conv blocks and a dropout classifier.

Adaptive pooling before the classifier (the notebooks flatten a fixed 128 px map into an
8.5M-parameter linear layer) makes it work at any input size, 28 px included.

`build` is the engine's: each block is models/fused_block.py's ConvBNPoolReLU, which in CPU
training runs BN + pool + ReLU as one fused kernel (and elsewhere as conv-BN-pool-ReLU with
pools that keep no argmax indices). `build_notebook` is the same network as the notebooks
write it (conv-BN-ReLU-MaxPool2d); the two share state dicts, values and gradients
(tests/models/test_seedcnn.py), and bench.e2e's baseline runs the notebook's.
"""
from torch import nn

from models.fused_block import ConvBNPoolReLU


def _head(num_classes: int, dropout: float) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(128 * 16, 256), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(256, num_classes)]


def build(num_classes: int, image_size: int, in_channels: int = 3, dropout: float = 0.25) -> nn.Module:
    return nn.Sequential(ConvBNPoolReLU(in_channels, 32), ConvBNPoolReLU(32, 64), ConvBNPoolReLU(64, 128),
                         *_head(num_classes, dropout))


def notebook_block(cin: int, cout: int) -> nn.Sequential:
    """conv-BN-ReLU-MaxPool2d, the order the notebooks write."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


def build_notebook(num_classes: int, image_size: int, in_channels: int = 3, dropout: float = 0.25) -> nn.Module:
    return nn.Sequential(notebook_block(in_channels, 32), notebook_block(32, 64), notebook_block(64, 128),
                         *_head(num_classes, dropout))
