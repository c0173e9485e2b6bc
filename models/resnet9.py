"""ResNet-9 (David Page's DAWNBench CIFAR-10 network) for small images such as MedMNIST 28 px.

prep conv, then three stages that each convolve and max-pool, with a two-conv residual block
after the first and the last; global max pool and a linear head. Unlike the ImageNet ResNets
it keeps full resolution through the first conv and downsamples only three times, which is
what 28-64 px inputs need. `width` is the prep conv's channels (Page uses 64); the stages
double it. A 28 px image costs 69 M multiply-adds at width 32 (8x the seed CNN's 8.4 M) and
17 M at width 16 (counted with torch.utils.flop_counter).
"""
from torch import nn

from models.lean_pool import LeanMaxPool2d


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


def build(num_classes: int, image_size: int, in_channels: int = 3, dropout: float = 0.0,
          width: int = 32) -> nn.Module:
    w = width
    return nn.Sequential(
        conv_bn(in_channels, w),
        conv_bn(w, 2 * w), LeanMaxPool2d(2), Residual(2 * w),
        conv_bn(2 * w, 4 * w), LeanMaxPool2d(2),
        conv_bn(4 * w, 8 * w), LeanMaxPool2d(2), Residual(8 * w),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(8 * w, num_classes))


def build_small(num_classes: int, image_size: int, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """Width 16: a quarter of the multiply-adds (17 M at 28 px), for CPU budgets."""
    return build(num_classes, image_size, in_channels, dropout, width=16)
