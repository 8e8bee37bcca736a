"""Small building blocks shared by the FMODR networks.

Every block is plain Conv2d + activation (+ BatchNorm in the detector only) so that ONNX Runtime and
TensorRT fuse them into single convolution kernels; up-sampling is nearest-neighbour followed by a
convolution (no transposed convolutions, which leave checkerboard artefacts in restored skin).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
    *,
    negative_slope: float = 0.2,
) -> nn.Sequential:
    """Conv2d ('same' padding for stride 1) followed by LeakyReLU; the generator's and discriminator's unit."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation),
        nn.LeakyReLU(negative_slope, inplace=True),
    )


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv2d + BatchNorm + ReLU; BatchNorm folds into the convolution at export."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UpConv(nn.Module):
    """Nearest-neighbour 2x up-sampling then a 3x3 convolution with LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv_act(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
