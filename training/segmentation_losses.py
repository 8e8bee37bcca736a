"""Losses of the visible-face segmenter (paper 003, Eqs. 3-4): soft Dice + BCE with online hard example
mining (OHEM, Shrivastava et al. 2016).

Shapes: :func:`dice_loss` and :func:`ohem_bce` take (N, 1, H, W) float32 logits and targets in [0, 1]
(augmentation blurs the labels at edges, so they may be fractional); :func:`segmentation_loss` takes
(N, C, H, W), one channel per output (visible face, whole-face region). Means, not sums, so the loss weights do
not depend on the crop size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class SegmentationLossConfig:
    """``ohem_ratio``: share of each sample's pixels (the hardest) kept by the BCE term; ``ohem_min``:
    never fewer pixels than this per sample. Weights multiply the Dice and BCE terms; ``channel_weights``
    the output channels (visible face, whole-face region)."""

    dice_weight: float = 1.0
    bce_weight: float = 1.0
    ohem_ratio: float = 0.25
    ohem_min: int = 256
    channel_weights: tuple[float, ...] = (1.0, 0.5)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_weights", tuple(float(w) for w in self.channel_weights))
        if not self.channel_weights or min(self.channel_weights) < 0:
            raise ValueError(f"channel_weights must be non-negative numbers, got {self.channel_weights}")
        if self.dice_weight < 0 or self.bce_weight < 0 or self.dice_weight + self.bce_weight <= 0:
            raise ValueError(
                f"loss weights must be >= 0 with a positive sum, got {self.dice_weight}, {self.bce_weight}"
            )
        if not 0.0 < self.ohem_ratio <= 1.0:
            raise ValueError(f"ohem_ratio must be in (0, 1], got {self.ohem_ratio}")
        if self.ohem_min < 1:
            raise ValueError(f"ohem_min must be >= 1, got {self.ohem_min}")


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4 or logits.shape[1] != 1 or logits.shape != target.shape:
        raise ValueError(
            f"logits and target must both be (N, 1, H, W), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Eq. 3: 1 - 2|P x G| / (|P| + |G|) per sample, averaged; ``eps`` keeps an empty target finite."""
    _check(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    total = prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return (1.0 - (2.0 * inter + eps) / (total + eps)).mean()


def ohem_bce(
    logits: torch.Tensor, target: torch.Tensor, ratio: float = 0.25, min_kept: int = 256
) -> torch.Tensor:
    """Eq. 4 with OHEM: per sample, the mean BCE of its ``max(ratio * H * W, min_kept)`` hardest pixels.

    Why per sample: a batch-wide top-k lets a few hard occluded faces starve the easy bare faces of
    gradient, and bare faces must stay exactly right.
    """
    _check(logits, target)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1)
    k = min(per_pixel.shape[1], max(int(ratio * per_pixel.shape[1]), min_kept))
    hardest, _ = per_pixel.topk(k, dim=1, sorted=False)
    return hardest.mean()


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, config: SegmentationLossConfig | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """(total loss, parts) for a batch of (N, C, H, W) logits and targets: Dice + OHEM BCE per channel,
    channel c weighted by ``config.channel_weights[c]`` (channel 0 visible face, 1 whole-face region).
    Parts: ``dice``, ``bce_ohem`` (channel 0) and ``dice_region``, ``bce_ohem_region`` (channel 1)."""
    cfg = config or SegmentationLossConfig()
    if logits.ndim != 4 or logits.shape != target.shape or logits.shape[1] > len(cfg.channel_weights):
        raise ValueError(
            f"logits and target must both be (N, C, H, W) with C <= {len(cfg.channel_weights)}, "
            f"got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    total = logits.new_zeros(())
    parts: dict[str, float] = {}
    for c in range(logits.shape[1]):
        lo, ta = logits[:, c : c + 1], target[:, c : c + 1]
        dice = dice_loss(lo, ta)
        bce = ohem_bce(lo, ta, cfg.ohem_ratio, cfg.ohem_min)
        total = total + cfg.channel_weights[c] * (cfg.dice_weight * dice + cfg.bce_weight * bce)
        suffix = "" if c == 0 else "_region"
        parts[f"dice{suffix}"] = float(dice.detach())
        parts[f"bce_ohem{suffix}"] = float(bce.detach())
    return total, parts
