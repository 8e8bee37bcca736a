"""One FMODR training step: detector (Eq. 1), coarse (Eq. 6) and refine (Eq. 7) generator halves and the
global-masked region discriminator (Eq. 5), weighted by the schedule of :mod:`training.config`.

The generator is restored from the *hole* ``mask > hole_threshold`` (every pixel the occluder touched,
antialiased edge included), while the detector learns the soft mask itself. Coarse and refine
parameters have their own Adam optimisers so that a phase can hold one half while the other trains; the
refine losses reach the coarse network through its output (end to end, as in DeepFill) whenever the
coarse half is being updated. The discriminator sees composites (restored inside the hole, input
outside), as the stream pipeline shows them.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engines.errors import BackendUnavailableError
from engines.runtime import resolve_device
from training.config import Lambdas, TrainConfig
from training.losses import (
    PerceptualLoss,
    adversarial_d_loss,
    adversarial_g_loss,
    mask_loss,
    reconstruction_l1,
)
from training.models import build_detector, build_discriminator, build_generator, composite, get_profile

log = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> torch.device:
    """The torch device for ``requested`` ("auto", "cpu", "cuda", "cuda:N"), by
    :func:`engines.runtime.resolve_device`: "auto" is CUDA when torch sees a GPU, else CPU.

    A CUDA device torch does not see is a ValueError here, like any other bad device: for training it
    is a wrong argument, which the CLI reports in one line.
    """
    try:
        return torch.device(resolve_device(requested))
    except BackendUnavailableError as exc:
        raise ValueError(str(exc)) from exc


@dataclass
class StepResult:
    """Scalar losses of one step (floats) and the outputs for sample grids (detached)."""

    losses: dict[str, float]
    coarse: torch.Tensor
    refined: torch.Tensor
    detected: torch.Tensor


class Trainer:
    """Holds the networks, optimisers and losses; :meth:`step` runs one training iteration."""

    def __init__(
        self, config: TrainConfig, device: torch.device, perceptual: PerceptualLoss | None = None
    ) -> None:
        self.config = config
        self.device = device
        self.profile = get_profile(config.profile)
        self.detector = build_detector(self.profile).to(device)
        self.generator = build_generator(self.profile).to(device)
        self.discriminator = build_discriminator(self.profile).to(device)
        self.perceptual = (perceptual or PerceptualLoss(config.perceptual_backbone)).to(device)
        betas = config.betas
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "coarse": torch.optim.Adam(self.generator.coarse.parameters(), lr=config.lr, betas=betas),
            "refine": torch.optim.Adam(self.generator.refine.parameters(), lr=config.lr, betas=betas),
            "discriminator": torch.optim.Adam(
                self.discriminator.parameters(), lr=config.disc_lr or config.lr, betas=betas
            ),
            "detector": torch.optim.Adam(
                self.detector.parameters(), lr=config.det_lr or config.lr, betas=betas
            ),
        }
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if self.amp_dtype is not None:
            # Contextual attention's softmax overflows in half precision (field lesson): keep it fp32.
            self.generator.pin_attention_fp32(True)

    def _amp_dtype(self) -> torch.dtype | None:
        if self.config.amp == "off":
            return None
        if self.device.type != "cuda":
            log.info(
                "amp=%s requested but the device is %s: training in float32", self.config.amp, self.device
            )
            return None
        if self.config.amp == "bf16" and not torch.cuda.is_bf16_supported():
            log.info("this GPU has no bfloat16: amp falls back to float16 with loss scaling")
            return torch.float16
        return torch.bfloat16 if self.config.amp == "bf16" else torch.float16

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def modules(self) -> dict[str, nn.Module]:
        return {"detector": self.detector, "generator": self.generator, "discriminator": self.discriminator}

    def train_mode(self, mode: bool = True) -> None:
        for m in self.modules().values():
            m.train(mode)

    def step(self, batch: dict[str, torch.Tensor], lambdas: Lambdas) -> StepResult:
        """One iteration on ``batch`` (image, target, mask as produced by the datasets)."""
        image = batch["image"].to(self.device, non_blocking=True)
        target = batch["target"].to(self.device, non_blocking=True)
        soft_mask = batch["mask"].to(self.device, non_blocking=True)
        hole = (soft_mask > self.config.hole_threshold).to(image.dtype)
        cfg = self.config
        losses: dict[str, float] = {}
        self.train_mode(True)

        # Detector (Eq. 1), every step.
        det_opt = self.optimizers["detector"]
        det_opt.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.detector(image)
            det_loss = mask_loss(
                logits.float(),
                soft_mask,
                bce_weight=cfg.detector_bce_weight,
                dice_weight=cfg.detector_dice_weight,
            )
        self.scaler.scale(det_loss).backward()
        self.scaler.step(det_opt)
        losses["det"] = float(det_loss.detach())

        prior = batch["prior"].to(self.device, non_blocking=True) if "prior" in batch else None
        with self._autocast():
            out = self.generator(image, hole, prior)
        coarse, refined = out.coarse.float(), out.refined.float()
        coarse_comp, refined_comp = composite(image, hole, coarse), composite(image, hole, refined)

        # Discriminator on real targets vs the composites of the halves whose adversarial weight is on.
        fakes = [x for x, w in ((coarse_comp, lambdas.lambda2), (refined_comp, lambdas.lambda4)) if w > 0]
        if fakes:
            d_opt = self.optimizers["discriminator"]
            d_opt.zero_grad(set_to_none=True)
            with self._autocast():
                real = self.discriminator.logits(target, hole)
                d_loss = torch.stack(
                    [adversarial_d_loss(real, self.discriminator.logits(f.detach(), hole)) for f in fakes]
                ).mean()
            self.scaler.scale(d_loss).backward()
            self.scaler.step(d_opt)
            losses["disc"] = float(d_loss.detach())

        # Generator halves (Eqs. 6 and 7).
        inside = hole.sum().clamp(min=1.0) * 3
        if cfg.reconstruction_region == "hole":
            rec_coarse = ((coarse - target).abs() * hole).sum() / inside
            rec_refined = ((refined - target).abs() * hole).sum() / inside
        else:
            rec_coarse, rec_refined = reconstruction_l1(coarse, target), reconstruction_l1(refined, target)
        coarse_hole_l1 = float(((coarse - target).abs() * hole).sum().detach() / inside)
        losses.update(
            rec_coarse=float(rec_coarse.detach()),
            rec_refined=float(rec_refined.detach()),
            coarse_hole_l1=coarse_hole_l1,
        )
        update_coarse = lambdas.update_coarse and (lambdas.lambda1 > 0 or lambdas.lambda2 > 0)
        update_refine = lambdas.update_refine and (
            lambdas.lambda3 > 0 or lambdas.lambda4 > 0 or lambdas.lambda5 > 0
        )
        skip = cfg.schedule.skip_refine_below
        if update_refine and skip is not None and coarse_hole_l1 < skip:
            update_refine = False  # the paper's rule: a good coarse result needs no refinement
            losses["refine_skipped"] = 1.0
        g_loss = torch.zeros((), device=self.device)
        self.discriminator.requires_grad_(False)
        with self._autocast():
            if update_coarse:
                g_loss = g_loss + lambdas.lambda1 * rec_coarse
                if lambdas.lambda2 > 0:
                    adv_c = adversarial_g_loss(self.discriminator.logits(coarse_comp, hole))
                    g_loss = g_loss + lambdas.lambda2 * adv_c
                    losses["adv_coarse"] = float(adv_c.detach())
            if update_refine:
                g_loss = g_loss + lambdas.lambda5 * rec_refined
                if lambdas.lambda3 > 0:
                    per = self.perceptual(refined, target)
                    g_loss = g_loss + lambdas.lambda3 * per
                    losses["perceptual"] = float(per.detach())
                if lambdas.lambda4 > 0:
                    adv_r = adversarial_g_loss(self.discriminator.logits(refined_comp, hole))
                    g_loss = g_loss + lambdas.lambda4 * adv_r
                    losses["adv_refined"] = float(adv_r.detach())
        self.discriminator.requires_grad_(True)
        if update_coarse or update_refine:
            for name in ("coarse", "refine"):
                self.optimizers[name].zero_grad(set_to_none=True)
            self.scaler.scale(g_loss).backward()
            if update_coarse:
                self.scaler.step(self.optimizers["coarse"])
            if update_refine:
                self.scaler.step(self.optimizers["refine"])
            losses["gen"] = float(g_loss.detach())
        self.scaler.update()
        return StepResult(losses, coarse.detach(), refined.detach(), torch.sigmoid(logits.detach().float()))

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> StepResult:
        """Eval-mode outputs for a batch (no parameter update)."""
        self.train_mode(False)
        image = batch["image"].to(self.device)
        hole = (batch["mask"].to(self.device) > self.config.hole_threshold).to(image.dtype)
        prior = batch["prior"].to(self.device) if "prior" in batch else None
        with self._autocast():
            out = self.generator(image, hole, prior)
            det = self.detector.probabilities(image)
        target = batch["target"].to(self.device)
        coarse, refined = out.coarse.float(), out.refined.float()
        inside = hole.sum().clamp(min=1.0) * 3
        losses = {
            "l1_hole": float(((composite(image, hole, refined) - target).abs() * hole).sum() / inside),
            "det_l2": float(((det.float() - batch["mask"].to(self.device)) ** 2).mean()),
        }
        self.train_mode(True)
        return StepResult(losses, coarse, refined, det.float())

    def state(self) -> dict[str, Any]:
        """Optimiser and scaler state for a checkpoint's "optimizers" entry."""
        state: dict[str, Any] = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_state(self, checkpoint: dict[str, Any]) -> None:
        """Restore networks and (when present) optimisers from a checkpoint dict."""
        self.detector.load_state_dict(checkpoint["detector"])
        self.generator.load_state_dict(checkpoint["generator"])
        if "discriminator" in checkpoint:
            self.discriminator.load_state_dict(checkpoint["discriminator"])
        saved = checkpoint.get("optimizers") or {}
        for name, opt in self.optimizers.items():
            if name in saved:
                opt.load_state_dict(saved[name])
        if saved.get("grad_scaler"):
            self.scaler.load_state_dict(saved["grad_scaler"])
