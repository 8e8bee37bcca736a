"""Refine network (paper Fig. 6c): a two-stream network over the coarse-filled image.

Input: ``composite = coarse * mask + image * (1 - mask)`` (N, 3, S, S) RGB in [0, 1] and ``mask`` (N, 1, S, S).
Both streams see (composite, mask) and downsample to 1/4 of the crop (DeepFill v1's refinement layout):

- convolution stream: dilated 3x3 convolutions at 1/4 resolution (the profile's ``refine_dilations``);
- attention stream: convolutions, then self-adaptive contextual attention (:mod:`.attention`) with the
  hole max-pooled to 1/4 (a 4x4 cell touching the hole counts as hole), then two convolutions.

The streams are concatenated, convolved and up-sampled twice (nearest + conv) back to S; a sigmoid head
gives RGB in [0, 1]. With ``attention=None`` the attention stream keeps its convolutions but no SCA (the
paper's "without SCA" ablation).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from training.models.attention import SelfAdaptiveContextualAttention
from training.models.blocks import UpConv, conv_act


def _encoder(base: int) -> nn.Sequential:
    """(N, 4, S, S) -> (N, 4*base, S/4, S/4)."""
    return nn.Sequential(
        conv_act(4, base),
        conv_act(base, 2 * base, stride=2),
        conv_act(2 * base, 2 * base),
        conv_act(2 * base, 4 * base, stride=2),
        conv_act(4 * base, 4 * base),
    )


class RefineNetwork(nn.Module):
    """Two-stream refinement: (composite_rgb01, mask) -> refined (N, 3, S, S) RGB in [0, 1]."""

    def __init__(
        self,
        base_channels: int,
        dilations: tuple[int, ...],
        attention: SelfAdaptiveContextualAttention | None,
    ) -> None:
        super().__init__()
        wide = 4 * base_channels
        self.conv_stream = nn.Sequential(
            _encoder(base_channels), *(conv_act(wide, wide, dilation=d) for d in dilations)
        )
        self.attention_encoder = _encoder(base_channels)
        self.attention = attention
        self.attention_post = nn.Sequential(conv_act(wide, wide), conv_act(wide, wide))
        self.merge = nn.Sequential(
            conv_act(2 * wide, wide),
            UpConv(wide, 2 * base_channels),
            UpConv(2 * base_channels, base_channels),
        )
        self.head = nn.Conv2d(base_channels, 3, 3, padding=1)

    def forward(self, composite_rgb01: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([composite_rgb01, mask], dim=1)
        conv_features = self.conv_stream(x)
        attended = self.attention_encoder(x)
        if self.attention is not None:
            attended = self.attention(attended, F.max_pool2d(mask, 4))
        attended = self.attention_post(attended)
        merged = self.merge(torch.cat([conv_features, attended], dim=1))
        return torch.sigmoid(self.head(merged))
