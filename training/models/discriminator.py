"""Global-masked region discriminator (paper section 4.3, after GLCIC [23]).

Two branches of the same structure (not sharing weights, like GLCIC's global and local networks): six
5x5 stride-2 convolutions (widths c, 2c, 4c, 8c, 8c, 8c) then a fully connected layer to a ``fc_dim``
feature (the paper: 1,024 each, 2,048 concatenated), followed by one fully connected layer on the
concatenation and a sigmoid.

Choices where the paper is silent:
- Inputs: both branches see RGB plus the mask as a 4th channel. The *global* branch sees the whole crop;
  the *masked-region* branch sees the mask's bounding box (grown by 1/8 of its size on each side, clipped
  to the crop) resampled to S x S with ``grid_sample``. A crop keeps the seam between restored and
  original pixels in view, where artefacts live, which ``image * mask`` would cut away. An empty mask
  selects the whole crop. Real and fake images are cropped with the same mask, so the box says nothing
  about which is which.
- Eq. 5 has separate D_global and D_masked terms while the text fuses the branches with one fully
  connected layer. A linear layer on [f_global, f_masked] is exactly a sum of two linear terms, so we
  split it: ``global_logits = W_g f_global + b/2``, ``masked_logits = W_m f_masked + b/2``; the fused
  logit is their sum and ``forward`` returns sigmoid(fused). The adversarial losses use the two branch
  logits (Eq. 5, 1/2 each) with BCE-with-logits, which is stable where log(sigmoid) is not.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from training.models.blocks import conv_act
from training.models.profiles import ModelProfile

BOX_MARGIN = 0.125


class DiscriminatorLogits(NamedTuple):
    """Branch logits, each (N, 1). ``fused`` = their sum = the logit of the concatenated-feature FC layer."""

    global_logits: torch.Tensor
    masked_logits: torch.Tensor

    @property
    def fused(self) -> torch.Tensor:
        return self.global_logits + self.masked_logits


def _branch(channels: int, crop_size: int, fc_dim: int) -> nn.Sequential:
    widths = [channels * m for m in (1, 2, 4, 8, 8, 8)]
    layers: list[nn.Module] = []
    in_channels = 4
    for width in widths:
        layers.append(conv_act(in_channels, width, kernel_size=5, stride=2))
        in_channels = width
    side = crop_size // 2**6
    layers += [nn.Flatten(), nn.Linear(widths[-1] * side * side, fc_dim), nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(*layers)


def mask_region_crop(
    image_rgb01: torch.Tensor, mask: torch.Tensor, margin: float = BOX_MARGIN
) -> torch.Tensor:
    """(image, mask) cropped to the mask's bounding box (+margin) and resampled to (N, 4, S, S)."""
    n, _, height, width = mask.shape
    with torch.no_grad():
        occupied = mask > 0.5
        rows, cols = occupied.any(dim=3).squeeze(1), occupied.any(dim=2).squeeze(1)  # (N, H), (N, W)

        def span(hit: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
            index = torch.arange(size, device=hit.device, dtype=torch.float32).expand_as(hit)
            empty = ~hit.any(dim=1)
            lo = torch.where(hit, index, torch.full_like(index, float(size))).amin(dim=1)
            hi = torch.where(hit, index, torch.full_like(index, -1.0)).amax(dim=1) + 1.0
            lo = torch.where(empty, torch.zeros_like(lo), lo)
            hi = torch.where(empty, torch.full_like(hi, float(size)), hi)
            grow = (hi - lo) * margin
            return (lo - grow).clamp(min=0.0), (hi + grow).clamp(max=float(size))

        y0, y1 = span(rows, height)
        x0, x1 = span(cols, width)
        theta = torch.zeros(n, 2, 3, device=mask.device, dtype=torch.float32)
        # affine_grid maps output [-1, 1] to input [-1, 1]; box [x0, x1) in pixels -> normalised centre/extent.
        theta[:, 0, 0] = (x1 - x0) / width
        theta[:, 0, 2] = (x0 + x1) / width - 1.0
        theta[:, 1, 1] = (y1 - y0) / height
        theta[:, 1, 2] = (y0 + y1) / height - 1.0
        grid = F.affine_grid(theta, [n, 4, height, width], align_corners=False)
    both = torch.cat([image_rgb01, mask], dim=1)
    return F.grid_sample(both, grid.to(both.dtype), mode="bilinear", align_corners=False)


class GlobalMaskedDiscriminator(nn.Module):
    """forward(image_rgb01 (N,3,S,S), mask (N,1,S,S)) -> real probability (N, 1); ``logits`` for losses."""

    def __init__(self, channels: int, crop_size: int, fc_dim: int) -> None:
        super().__init__()
        self.global_branch = _branch(channels, crop_size, fc_dim)
        self.masked_branch = _branch(channels, crop_size, fc_dim)
        self.fc = nn.Linear(2 * fc_dim, 1)
        self.fc_dim = fc_dim

    def logits(self, image_rgb01: torch.Tensor, mask: torch.Tensor) -> DiscriminatorLogits:
        f_global = self.global_branch(torch.cat([image_rgb01, mask], dim=1))
        f_masked = self.masked_branch(mask_region_crop(image_rgb01, mask))
        half_bias = self.fc.bias / 2
        return DiscriminatorLogits(
            global_logits=F.linear(f_global, self.fc.weight[:, : self.fc_dim]) + half_bias,
            masked_logits=F.linear(f_masked, self.fc.weight[:, self.fc_dim :]) + half_bias,
        )

    def forward(self, image_rgb01: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(image_rgb01, mask).fused)


def build_discriminator(profile: ModelProfile) -> GlobalMaskedDiscriminator:
    """The global-masked region discriminator sized by ``profile``."""
    return GlobalMaskedDiscriminator(profile.disc_channels, profile.crop_size, profile.disc_fc_dim)
