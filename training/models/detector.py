"""Face-mask region detector (paper Fig. 6a): a small fully convolutional encoder-decoder.

Input ``image_rgb01`` (N, 3, S, S) RGB in [0, 1]; output logits (N, 1, S, S) where sigmoid(logit) is the
probability that a pixel is occluded (1 = face-mask / occluder). The paper gives only "convolutions and
up-sampling"; choices made here:

- The stem has stride 2 and the decoder stops at 1/2 resolution; the 1-channel logits are then
  up-sampled bilinearly to S. Occluder masks are smooth blobs whose edges are feathered when composited,
  so full-resolution decoding buys nothing visible and would cost most of the detector's CPU budget.
- Skip connections are added (FCN style, not concatenated) to keep the decoder narrow.
- BatchNorm + ReLU: the detector trains on large batches of synthetic occlusions and BatchNorm folds
  into the convolutions at export, so it costs nothing at inference.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from training.models.blocks import conv_bn_relu
from training.models.profiles import ModelProfile


class MaskRegionDetector(nn.Module):
    """Encoder (stride-2 levels) + decoder (nearest up-sampling, additive skips) -> per-pixel logits."""

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        widths = [channels * 2**i for i in range(levels + 1)]
        self.stem = conv_bn_relu(3, widths[0], stride=2)
        self.down = nn.ModuleList(
            nn.Sequential(
                conv_bn_relu(widths[i], widths[i + 1], stride=2), conv_bn_relu(widths[i + 1], widths[i + 1])
            )
            for i in range(levels)
        )
        # 1x1 projections before up-sampling keep the 3x3 decoder convolutions at the narrower width.
        self.project = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(levels))
        self.fuse = nn.ModuleList(conv_bn_relu(widths[i], widths[i]) for i in range(levels))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, image_rgb01: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) RGB in [0, 1] -> logits (N, 1, S, S)."""
        skips = [self.stem(image_rgb01)]
        for block in self.down:
            skips.append(block(skips[-1]))
        x = skips.pop()
        for i in reversed(range(len(self.down))):
            x = F.interpolate(self.project[i](x), scale_factor=2.0, mode="nearest") + skips[i]
            x = self.fuse[i](x)
        logits_half = self.head(x)
        return F.interpolate(logits_half, size=image_rgb01.shape[-2:], mode="bilinear", align_corners=False)

    def probabilities(self, image_rgb01: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) occlusion probability in [0, 1]; what the exported ``mask`` output carries."""
        return torch.sigmoid(self.forward(image_rgb01))


def build_detector(profile: ModelProfile) -> MaskRegionDetector:
    """The face-mask region detector sized by ``profile``."""
    return MaskRegionDetector(profile.det_channels, profile.det_levels)
