"""Coarse network (paper Fig. 6b): a U-Net from the occluded image and its mask to a coarse restoration.

Input (N, 4, S, S): ``image_rgb01 * (1 - mask)`` and ``mask`` (1 = pixel to restore), plus, for profiles
with a face prior, the rendered prior's 3 RGB channels (N, 7, S, S). Output (N, 3, S, S) RGB in [0, 1]
(sigmoid head). Choices where the paper is silent:

- Encoder: a 3x3 stem at full resolution, then per level a stride-2 convolution and a 3x3 convolution,
  widths doubling up to 8x the base. The bottleneck holds dilated convolutions (DeepFill's coarse net)
  so the receptive field covers the whole crop: a mask hides half a face and the network must see the
  eyes to draw the mouth.
- Decoder: nearest up-sampling of a 1x1 projection, *added* to the encoder skip (LinkNet-style U-Net),
  then a 3x3 convolution. Concatenated skips would triple the decoder's cost for no visible gain at
  these widths.
- LeakyReLU(0.2), no normalisation: batch statistics of hole-filled images are unstable at the paper's
  batch size of 4.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from training.models.blocks import conv_act


def level_widths(base: int, levels: int) -> list[int]:
    """Channel width at each resolution level 0..levels (base * 2**i, capped at 8 * base)."""
    return [base * min(2**i, 8) for i in range(levels + 1)]


class CoarseUNet(nn.Module):
    """U-Net: (N, in_channels, S, S) masked image + mask (+ prior) -> (N, 3, S, S) coarse RGB in [0, 1]."""

    def __init__(
        self, base_channels: int, levels: int, dilations: tuple[int, ...], in_channels: int = 4
    ) -> None:
        super().__init__()
        widths = level_widths(base_channels, levels)
        self.stem = conv_act(in_channels, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(
                conv_act(widths[i], widths[i + 1], stride=2), conv_act(widths[i + 1], widths[i + 1])
            )
            for i in range(levels)
        )
        self.bottleneck = nn.Sequential(*(conv_act(widths[-1], widths[-1], dilation=d) for d in dilations))
        self.project = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(levels))
        self.fuse = nn.ModuleList(conv_act(widths[i], widths[i]) for i in range(levels))
        self.head = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, masked_rgb_and_mask: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(masked_rgb_and_mask)]
        for block in self.down:
            skips.append(block(skips[-1]))
        x = self.bottleneck(skips.pop())
        for i in reversed(range(len(self.down))):
            x = F.interpolate(self.project[i](x), scale_factor=2.0, mode="nearest") + skips[i]
            x = self.fuse[i](x)
        return torch.sigmoid(self.head(x))
