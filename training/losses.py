"""FMODR losses (paper Eqs. 1, 2, 3, 5). Images are RGB in [0, 1]; masks are (N, 1, S, S), 1 = occluded.

The paper writes Eqs. 1-3 as sums over pixels; we take means so that loss weights (Eqs. 6, 7) do not
depend on the crop size.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from training.models.backbones import FeatureBackbone, load_perceptual_backbone
from training.models.discriminator import DiscriminatorLogits


def pixel_l2(pred: torch.Tensor, target_mask: torch.Tensor, *, logits: bool = True) -> torch.Tensor:
    """Eq. 1: mean squared error between the predicted mask probability and the 0/1 target mask.

    ``pred`` is (N, 1, S, S): detector logits (``logits=True``, sigmoid applied here) or probabilities.
    """
    _check_same_shape(pred, target_mask, "pred", "target_mask")
    prob = torch.sigmoid(pred) if logits else pred
    return F.mse_loss(prob, target_mask)


def mask_loss(
    logits: torch.Tensor, target_mask: torch.Tensor, *, bce_weight: float = 0.0, dice_weight: float = 0.0
) -> torch.Tensor:
    """Eq. 1 plus optional BCE and soft-Dice terms (not in the paper; off by default).

    BCE gives useful gradients where the sigmoid saturates, Dice balances small occluders against the
    large background. Both take the detector's logits.
    """
    loss = pixel_l2(logits, target_mask, logits=True)
    if bce_weight:
        loss = loss + bce_weight * F.binary_cross_entropy_with_logits(logits, target_mask)
    if dice_weight:
        prob = torch.sigmoid(logits)
        inter = (prob * target_mask).sum(dim=(1, 2, 3))
        total = prob.sum(dim=(1, 2, 3)) + target_mask.sum(dim=(1, 2, 3))
        loss = loss + dice_weight * (1.0 - (2.0 * inter + 1.0) / (total + 1.0)).mean()
    return loss


def reconstruction_l1(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Eq. 2: mean absolute error over all pixels and channels."""
    _check_same_shape(pred, gt, "pred", "gt")
    return F.l1_loss(pred, gt)


class PerceptualLoss(nn.Module):
    """Eq. 3: mean squared difference of frozen backbone features (VGG16 relu3_3 in the paper).

    ``backbone`` is a spec for :func:`load_perceptual_backbone` or a loaded backbone; ``backbone_name``
    records what was used. Inputs are RGB in [0, 1]; the backbone normalises them.
    """

    def __init__(self, backbone: str | FeatureBackbone = "mobilenet_v2") -> None:
        super().__init__()
        self.backbone = load_perceptual_backbone(backbone) if isinstance(backbone, str) else backbone.freeze()
        self.backbone_name: str = self.backbone.name

    def forward(self, pred_rgb01: torch.Tensor, gt_rgb01: torch.Tensor) -> torch.Tensor:
        _check_same_shape(pred_rgb01, gt_rgb01, "pred_rgb01", "gt_rgb01")
        with torch.no_grad():
            target = self.backbone(gt_rgb01)
        return F.mse_loss(self.backbone(pred_rgb01), target)


def adversarial_d_loss(real: DiscriminatorLogits, fake: DiscriminatorLogits) -> torch.Tensor:
    """Eq. 5 for the discriminator: 1/2 (global term) + 1/2 (masked-region term), as BCE on logits.

    Each term is -log D(real) - log(1 - D(fake)). Pass ``fake`` computed on detached generator output.
    """

    def term(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))

    return 0.5 * term(real.global_logits, fake.global_logits) + 0.5 * term(
        real.masked_logits, fake.masked_logits
    )


def adversarial_g_loss(fake: DiscriminatorLogits) -> torch.Tensor:
    """Eq. 5 for the generator, non-saturating form: 1/2 (-log D_global(G)) + 1/2 (-log D_masked(G)).

    Minimising log(1 - D(G(x))) as written gives vanishing gradients early in training (Goodfellow et
    al.); -log D(G(x)) has the same fixed point.
    """
    ones = torch.ones_like(fake.global_logits)
    return 0.5 * F.binary_cross_entropy_with_logits(
        fake.global_logits, ones
    ) + 0.5 * F.binary_cross_entropy_with_logits(fake.masked_logits, ones)


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
