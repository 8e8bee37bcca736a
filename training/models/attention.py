"""Self-adaptive contextual attention (SCA), paper section 4.2 and Eq. 4, as batched tensor operations.

Given features (N, C, H, W) and the hole mask (N, 1, H, W) (1 = to restore), every foreground position
borrows features from background patches that resemble it:

1. Matching runs at 1/rate of the feature resolution (DeepFill's ``rate``; with the generator computing
   attention at 1/4 of the crop and rate 2 this is 1/8 of the crop, e.g. 32x32 for a 256 crop).
2. 3x3 patches around every position are L2-normalised and compared by cosine similarity (a batched
   matmul, bounded in [-1, 1]); the paper normalises both foreground and background patches, DeepFill
   only the background. A patch is pre-divided by its largest magnitude before the L2 norm so that the
   sum of squares stays below C*9 and cannot overflow fp16.
3. Eq. 4: the (foreground x background) similarity map is refined by two learnable 3x3 convolutions.
   We read "two-layer convolution replacing the identity matrix" as DeepFill's two propagation passes
   (one along the row-major flattening, one along the column-major one) whose fixed eye(3) kernel
   becomes learnable; both are initialised to eye(3), so training starts from DeepFill's behaviour.
   They are linear (Eq. 4 is a plain weighted sum) and have no bias.
4. Scores are scaled (softmax_scale, DeepFill's 10) and clamped to +-1e3, background patches that touch
   the hole are set to -1e4 (finite in fp16, unlike -inf), the row maximum is subtracted and a softmax
   over background positions gives the attention. The paper's "select the most similar background block
   and multiply by its similarity" is a hard arg-max; the scaled softmax is its differentiable version.
5. Raw background patches of size 2*rate at stride rate (DeepFill) are pasted back with the attention as
   weights: a transposed convolution whose kernels are the patches. Kernels differ per sample, and a
   per-sample ConvTranspose would need a static batch (groups = N), so it is written as a batched matmul
   (attention x patches) followed by col2im, itself a grouped transposed convolution with constant
   one-hot kernels; overlapping pastes are averaged.
6. Outside the hole the input features are kept; inside, the borrowed ones replace them.

No Python loop runs over the batch; the loops below unroll over kernel taps only, so the module exports
to ONNX (opset 17) and torch.export with a dynamic batch dimension.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# fp16-safe stand-in for -inf: exp(-1e4 - max) underflows to exactly 0 and -1e4 is representable.
MASKED_SCORE = -1.0e4
SCORE_LIMIT = 1.0e3
_EPS = 1.0e-4  # above fp16's smallest normal (6.1e-5)


def one_hot_kernels(channels: int, kernel: int) -> torch.Tensor:
    """(C*k*k, 1, k, k) weights whose grouped convolution copies each tap of a k x k window to a channel."""
    eye = torch.eye(kernel * kernel)
    return eye.reshape(kernel * kernel, 1, kernel, kernel).repeat(channels, 1, 1, 1)


def extract_patches(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C*k*k, L) patches in (C, ky, kx) order, exactly like F.unfold (im2col).

    ``weight`` is :func:`one_hot_kernels` (C, k): a grouped convolution is one Conv node in ONNX, where
    k*k strided slices would be dozens of nodes. Its shape is static, so the export keeps it a constant.
    """
    channels = weight.shape[0] // (weight.shape[2] * weight.shape[3])
    cols = F.conv2d(x, weight, stride=stride, padding=padding, groups=channels)
    return cols.reshape(-1, weight.shape[0], cols.shape[2] * cols.shape[3])


def fold_patches(
    columns: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, grid: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`extract_patches` summing overlaps (col2im, like F.fold): (N, C*k*k, h*w) -> (N, C, H', W').

    A grouped transposed convolution with the same one-hot kernels: each tap is pasted at its place and
    overlaps add up. ONNX Col2Im would need opset 18; this is one ConvTranspose node with constant weights.
    """
    channels = weight.shape[0] // (weight.shape[2] * weight.shape[3])
    cols = columns.reshape(-1, weight.shape[0], grid[0], grid[1])
    return F.conv_transpose2d(cols, weight, stride=stride, padding=padding, groups=channels)


def _unit_vectors(patches: torch.Tensor) -> torch.Tensor:
    """L2-normalise along dim 1 without overflowing fp16 (pre-divide by the largest magnitude)."""
    largest = patches.abs().amax(dim=1, keepdim=True).clamp_min(_EPS)
    scaled = patches / largest
    return scaled / scaled.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(_EPS)


class SelfAdaptiveContextualAttention(nn.Module):
    """SCA: (features (N, C, H, W), hole (N, 1, H, W) in [0, 1]) -> features (N, C, H, W).

    ``channels`` is C (fixed by the architecture, so the patch kernels are constant buffers). H and W must
    be multiples of ``rate``. ``pin_fp32`` runs the attention in float32 even under autocast or with half
    inputs (a safety switch for fp16 deployments; off by default).
    """

    def __init__(
        self, channels: int, rate: int = 2, softmax_scale: float = 10.0, *, pin_fp32: bool = False
    ) -> None:
        super().__init__()
        if rate not in (1, 2):
            raise ValueError(f"rate must be 1 or 2, got {rate}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels
        self.rate = rate
        # Matching uses 3x3 patches; pasting uses DeepFill's 2*rate patches at stride rate (3x3 at rate 1).
        self.raw_kernel = 2 * rate if rate > 1 else 3
        self.raw_padding = rate // 2 if rate > 1 else 1
        self.match_kernels: torch.Tensor
        self.raw_kernels: torch.Tensor
        self.register_buffer("match_kernels", one_hot_kernels(channels, 3), persistent=False)
        self.register_buffer("raw_kernels", one_hot_kernels(channels, self.raw_kernel), persistent=False)
        self.softmax_scale = float(softmax_scale)
        self.pin_fp32 = pin_fp32
        self.propagate = nn.ModuleList(nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(2))
        with torch.no_grad():
            for conv in self.propagate:
                assert isinstance(conv, nn.Conv2d)
                conv.weight.copy_(torch.eye(3).reshape(1, 1, 3, 3))

    def forward(self, features: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        if (
            features.shape[1] != self.channels
            or features.shape[-1] % self.rate
            or features.shape[-2] % self.rate
        ):
            raise ValueError(
                f"features must be (N, {self.channels}, H, W) with H, W multiples of {self.rate}, "
                f"got {tuple(features.shape)}"
            )
        device_type = features.device.type
        if self.pin_fp32 and (features.dtype != torch.float32 or torch.is_autocast_enabled(device_type)):
            with torch.autocast(device_type=device_type, enabled=False):
                out = self._attend(features.float(), hole.float())
            return out.to(features.dtype)
        return self._attend(features, hole)

    def _propagate(self, similarity: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Eq. 4 twice: along the row-major then the column-major flattening of both position axes."""
        positions = h * w
        x = self.propagate[0](similarity.reshape(-1, 1, positions, positions))
        x = x.reshape(-1, h, w, h, w).permute(0, 2, 1, 4, 3).reshape(-1, 1, positions, positions)
        x = self.propagate[1](x)
        return x.reshape(-1, w, h, w, h).permute(0, 2, 1, 4, 3).reshape(-1, positions, positions)

    def _attend(self, features: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        height, width = features.shape[2], features.shape[3]
        rate = self.rate
        h, w = height // rate, width // rate
        small = F.avg_pool2d(features, rate) if rate > 1 else features
        hole_small = F.max_pool2d(hole, rate) if rate > 1 else hole
        # A background patch is usable only if none of its 3x3 pixels lies in the hole.
        hole_in_patch = F.max_pool2d(hole_small, 3, stride=1, padding=1)
        valid = (hole_in_patch < 0.5).reshape(-1, 1, h * w)  # (N, 1, L_bg) broadcast over foreground rows

        unit = _unit_vectors(extract_patches(small, self.match_kernels, 1, 1))  # (N, C*9, L)
        similarity = torch.matmul(unit.transpose(1, 2), unit)  # (N, L_fg, L_bg), cosine in [-1, 1]
        similarity = self._propagate(similarity, h, w)

        scores = (similarity * self.softmax_scale).clamp(-SCORE_LIMIT, SCORE_LIMIT)
        scores = scores.masked_fill(~valid, MASKED_SCORE)
        scores = scores - scores.amax(dim=-1, keepdim=True)
        attention = torch.softmax(scores, dim=-1) * valid.to(scores.dtype)

        raw = extract_patches(features, self.raw_kernels, rate, self.raw_padding)  # (N, C*k*k, L_bg)
        pasted = torch.matmul(raw, attention.transpose(1, 2))  # (N, C*k*k, L_fg)
        borrowed = fold_patches(pasted, self.raw_kernels, rate, self.raw_padding, (h, w))
        # How many pasted patches cover each pixel (fewer at the border); shapes only, so it folds to a constant.
        taps = self.raw_kernel * self.raw_kernel
        one_channel = self.raw_kernels[:taps]
        ones = torch.ones_like(features[:1, :1])
        coverage = fold_patches(
            extract_patches(ones, one_channel, rate, self.raw_padding),
            one_channel,
            rate,
            self.raw_padding,
            (h, w),
        )
        borrowed = borrowed / coverage
        return borrowed * hole + features * (1.0 - hole)
