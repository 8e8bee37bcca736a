"""The FMODR generator: coarse U-Net followed by the two-stream refine network (paper section 4.1).

``forward(image_rgb01, mask, prior_rgb01=None)``: image (N, 3, S, S) RGB in [0, 1], mask (N, 1, S, S) in
[0, 1] where 1 marks the pixels to restore (the detector's probability may be passed as is; it is used as
a soft mask), and for profiles with ``prior_input`` the rendered face prior (N, 3, S, S) RGB in [0, 1]
(the whole face, visible part included: the network sees how well the prior fits what it can check).
Returns :class:`GeneratorOutput` with ``coarse`` and ``refined``, both (N, 3, S, S) RGB in [0, 1] for the
whole crop (sigmoid heads). Neither is composited: the caller blends ``refined`` inside the mask
(:func:`composite`), which is also what the exported ``restored`` output means.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from training.models.attention import SelfAdaptiveContextualAttention
from training.models.coarse import CoarseUNet
from training.models.profiles import ModelProfile
from training.models.refine import RefineNetwork


class GeneratorOutput(NamedTuple):
    """Coarse and refined restorations, each (N, 3, S, S) RGB in [0, 1]."""

    coarse: torch.Tensor
    refined: torch.Tensor


def composite(image_rgb01: torch.Tensor, mask: torch.Tensor, restored_rgb01: torch.Tensor) -> torch.Tensor:
    """Restored pixels inside the mask, original pixels outside: ``restored * mask + image * (1 - mask)``."""
    return restored_rgb01 * mask + image_rgb01 * (1.0 - mask)


class FMODRGenerator(nn.Module):
    """Coarse-to-refine generator; see the module docstring for the tensor contract."""

    def __init__(self, profile: ModelProfile) -> None:
        super().__init__()
        self.profile = profile
        self.coarse = CoarseUNet(
            profile.gen_channels,
            profile.coarse_levels,
            profile.coarse_dilations,
            in_channels=7 if profile.prior_input else 4,
        )
        attention = (
            SelfAdaptiveContextualAttention(
                4 * profile.gen_channels, profile.attention_rate, profile.attention_softmax_scale
            )
            if profile.attention
            else None
        )
        self.refine = RefineNetwork(profile.gen_channels, profile.refine_dilations, attention)
        # With a prior, the final image is a per-pixel blend ``prior + g * (refined - prior)`` whose gate g
        # starts closed (zero weights, sigmoid(-6) ~ 0.0025): training begins at the prior's own quality,
        # which measures well above the small network's fill, and opens g only where the network's
        # output beats it.
        self.prior_gate: nn.Conv2d | None = None
        if profile.prior_input:
            self.prior_gate = nn.Conv2d(7, 1, 3, padding=1)
            nn.init.zeros_(self.prior_gate.weight)
            assert self.prior_gate.bias is not None  # Conv2d's default bias=True
            nn.init.constant_(self.prior_gate.bias, -6.0)

    def forward(
        self, image_rgb01: torch.Tensor, mask: torch.Tensor, prior_rgb01: torch.Tensor | None = None
    ) -> GeneratorOutput:
        size = self.profile.crop_size
        if image_rgb01.shape[1:] != (3, size, size) or mask.shape[1:] != (1, size, size):
            raise ValueError(
                f"generator expects image (N, 3, {size}, {size}) and mask (N, 1, {size}, {size}), "
                f"got {tuple(image_rgb01.shape)} and {tuple(mask.shape)}"
            )
        if self.profile.prior_input != (prior_rgb01 is not None):
            raise ValueError(
                f"profile {self.profile.name!r} "
                + ("needs a prior (N, 3, S, S)" if self.profile.prior_input else "takes no prior")
            )
        known = image_rgb01 * (1.0 - mask)
        parts = [known, mask]
        if prior_rgb01 is not None:
            if prior_rgb01.shape != image_rgb01.shape:
                raise ValueError(
                    f"prior must be shaped like the image {tuple(image_rgb01.shape)}, got {tuple(prior_rgb01.shape)}"
                )
            parts.append(prior_rgb01)
        coarse = self.coarse(torch.cat(parts, dim=1))
        refined = self.refine(coarse * mask + known, mask)
        if self.prior_gate is not None and prior_rgb01 is not None:
            gate = torch.sigmoid(self.prior_gate(torch.cat([refined, prior_rgb01, mask], dim=1)))
            refined = prior_rgb01 + gate * (refined - prior_rgb01)
        return GeneratorOutput(coarse=coarse, refined=refined)

    def pin_attention_fp32(self, pinned: bool = True) -> None:
        """Run the contextual attention in float32 even under autocast / half precision."""
        if self.refine.attention is not None:
            self.refine.attention.pin_fp32 = pinned


def build_generator(profile: ModelProfile) -> FMODRGenerator:
    """The FMODR generator sized by ``profile``."""
    return FMODRGenerator(profile)
