"""The network of ST-LPIPS (alex, shift-tolerant), our own definition; see :mod:`benchmarks.lpips`.

A re-implementation of ``stlpips_pytorch.invariant_networks.alexnet(variant="shift_tolerant",
filter_size=3)`` plus the LPIPS v0.1 head of ``stlpips_pytorch.stlpips.LPIPS`` (stlpips-pytorch 0.0.2,
Ghildyal & Liu, ECCV 2022), in eval mode only (no dropout). The submodule names reproduce the package's,
so its weight file ``alex_shift_tolerant.pth`` loads with ``strict=True``:

- ``scaling_layer.shift`` / ``.scale``: the fixed LPIPS input normalisation;
- ``net.slice1`` .. ``net.slice5``: the AlexNet trunk with stride-1 convolutions, each downsampling done
  by a 3x3 binomial blur with stride 2 after reflection padding of 2 (``BlurPool``; Zhang 2019's
  anti-aliasing, "pad_more" in the package), the numbers in the names are the layers' indices in the
  package's ``features`` list (``net.slice1.0`` conv, ``net.slice1.1`` blur, ...);
- ``lin0`` .. ``lin4``: the learned 1x1 convolutions (``linK.model.1``; index 0 was the dropout).

Distance: features of both images at 5 depths, each unit-normalised over channels, squared difference,
1x1 conv, spatial mean, summed over the 5 depths. Inputs: (N, 3, H, W) RGB in [-1, 1].
"""

from __future__ import annotations

from collections import OrderedDict
from math import comb

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS = (64, 192, 384, 256, 256)
BLUR_SIZE = 3
BLUR_STRIDE = 2
# "pad_more": filt_size - 1 on every side, reflected (stlpips_pytorch/models_lpf/downsample.py).
BLUR_PAD = BLUR_SIZE - 1
# utils.normalize_tensor's eps: added to the norm, not under the square root.
NORM_EPS = 1e-10


def binomial_filter(channels: int, size: int = BLUR_SIZE) -> torch.Tensor:
    """(channels, 1, size, size) normalised outer product of binomial coefficients ([1, 2, 1] for 3)."""
    row = torch.tensor([float(comb(size - 1, k)) for k in range(size)])
    filt = row[:, None] * row[None, :]
    return (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1)


class BlurPool(nn.Module):
    """Reflection pad by 2, depthwise 3x3 binomial blur, stride 2 (the package's ``Downsample``)."""

    filt: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(BLUR_PAD)
        self.register_buffer("filt", binomial_filter(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.pad(x), self.filt, stride=BLUR_STRIDE, groups=x.shape[1])


class ScalingLayer(nn.Module):
    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


def _seq(*layers: tuple[int, nn.Module]) -> nn.Sequential:
    return nn.Sequential(OrderedDict((str(i), m) for i, m in layers))


class ShiftTolerantAlexNet(nn.Module):
    """The five feature slices; ``forward`` returns the output of each (after its ReLU)."""

    def __init__(self) -> None:
        super().__init__()
        self.slice1 = _seq(
            (0, nn.Conv2d(3, 64, kernel_size=11, stride=1, padding=2)), (1, BlurPool(64)), (2, nn.ReLU())
        )
        self.slice2 = _seq(
            (3, nn.MaxPool2d(kernel_size=3, stride=1)),
            (4, BlurPool(64)),
            (5, nn.Conv2d(64, 192, kernel_size=5, padding=2)),
            (6, nn.ReLU()),
        )
        self.slice3 = _seq(
            (7, nn.MaxPool2d(kernel_size=3, stride=1)),
            (8, BlurPool(192)),
            (9, nn.Conv2d(192, 384, kernel_size=3, padding=1)),
            (10, nn.ReLU()),
        )
        self.slice4 = _seq((11, nn.Conv2d(384, 256, kernel_size=3, padding=1)), (12, nn.ReLU()))
        self.slice5 = _seq((13, nn.Conv2d(256, 256, kernel_size=3, padding=1)), (14, nn.ReLU()))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for s in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = s(x)
            outs.append(x)
        return outs


class LinLayer(nn.Module):
    """1x1 conv to one channel, no bias; held at ``model.1`` like the package's ``NetLinLayer``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = _seq((1, nn.Conv2d(channels, 1, kernel_size=1, stride=1, padding=0, bias=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def normalize_channels(x: torch.Tensor) -> torch.Tensor:
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + NORM_EPS)


class STLpipsAlex(nn.Module):
    """ST-LPIPS (alex, shift-tolerant, v0.1 head); state-dict keys are those of ``alex_shift_tolerant.pth``."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = ShiftTolerantAlexNet()
        self.lin0 = LinLayer(CHANNELS[0])
        self.lin1 = LinLayer(CHANNELS[1])
        self.lin2 = LinLayer(CHANNELS[2])
        self.lin3 = LinLayer(CHANNELS[3])
        self.lin4 = LinLayer(CHANNELS[4])

    @property
    def lins(self) -> tuple[LinLayer, ...]:
        return (self.lin0, self.lin1, self.lin2, self.lin3, self.lin4)

    def features(self, x_pm1: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) RGB in [-1, 1] -> the 5 channel-normalised feature maps."""
        return [normalize_channels(f) for f in self.net(self.scaling_layer(x_pm1))]

    def compare(self, feats0: list[torch.Tensor], feats1: list[torch.Tensor]) -> torch.Tensor:
        """(N,) distances between two feature lists (batches broadcast: 1 against N works)."""
        total: torch.Tensor | None = None
        for lin, f0, f1 in zip(self.lins, feats0, feats1, strict=True):
            d = lin((f0 - f1) ** 2).mean(dim=(2, 3), keepdim=True)
            total = d if total is None else total + d
        assert total is not None
        return total.reshape(-1)

    def forward(self, in0_pm1: torch.Tensor, in1_pm1: torch.Tensor) -> torch.Tensor:
        return self.compare(self.features(in0_pm1), self.features(in1_pm1))
