"""Model size profiles: one frozen dataclass per deployment target of the FMODR networks.

- ``tiny``: 64x64 crops, a handful of channels; for tests (a full train step runs on CPU in well under 1 s).
- ``small``: 128x128 crops, sized to run on a 2-core CPU through ONNX Runtime (detector ~2 ms, generator
  ~10 ms per face at batch 1).
- ``full``: 256x256 crops with the paper's widths (DeepFill-style generator at 32 base channels,
  GLCIC-style discriminator at 64 channels with 1,024-d features per branch, 2,048-d concatenated).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ModelProfile:
    """Architecture hyper-parameters shared by the detector, generator and discriminator builders.

    Widths are base channel counts; each network multiplies them per level. ``crop_size`` is the side of
    the canonical face crop (:mod:`engines.crop`) the networks are trained and run on.
    """

    name: str
    crop_size: int
    det_channels: int
    gen_channels: int
    attention: bool
    disc_channels: int
    # Detector: number of stride-2 levels below its half-resolution stem.
    det_levels: int = 3
    # Coarse U-Net: stride-2 levels and the dilations of its bottleneck convolutions.
    coarse_levels: int = 3
    coarse_dilations: tuple[int, ...] = (2, 4)
    # Refine network: dilations of the convolution stream at 1/4 resolution.
    refine_dilations: tuple[int, ...] = (2, 4, 8, 16)
    # Self-adaptive contextual attention: matching is done at 1/(4 * rate) of the crop (DeepFill's rate).
    attention_rate: int = 2
    attention_softmax_scale: float = 10.0
    # Discriminator: width of each branch's fully connected feature vector (the paper: 1,024, so 2,048 joint).
    disc_fc_dim: int = 1024
    # The generator also takes a rendered face prior (paper 003's 3D prior; here the morphable model of
    # engines.prior) as a third input: (N, 3, S, S) RGB in [0, 1], the whole face as the prior draws it.
    prior_input: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("profile name must be non-empty")
        # The generator downsamples to 1/4 for the attention and 1/(4*rate) for matching, the coarse
        # U-Net to 1/2**coarse_levels and the discriminator six times: every one must divide evenly.
        if self.crop_size < 64 or self.crop_size % 64:
            raise ValueError(f"crop_size must be a multiple of 64 and >= 64, got {self.crop_size}")
        for field_name in ("det_channels", "gen_channels", "disc_channels", "disc_fc_dim"):
            value = getattr(self, field_name)
            if value < 1:
                raise ValueError(f"{field_name} must be >= 1, got {value}")
        if not 1 <= self.det_levels <= 4:
            raise ValueError(f"det_levels must be in 1..4, got {self.det_levels}")
        if not 1 <= self.coarse_levels <= 5:
            raise ValueError(f"coarse_levels must be in 1..5, got {self.coarse_levels}")
        if self.attention_rate not in (1, 2):
            raise ValueError(f"attention_rate must be 1 or 2, got {self.attention_rate}")
        if self.attention_softmax_scale <= 0:
            raise ValueError(f"attention_softmax_scale must be > 0, got {self.attention_softmax_scale}")
        if any(d < 1 for d in (*self.coarse_dilations, *self.refine_dilations)):
            raise ValueError(
                f"dilations must be >= 1, got coarse {self.coarse_dilations} refine {self.refine_dilations}"
            )


PROFILES: dict[str, ModelProfile] = {
    "tiny": ModelProfile(
        name="tiny",
        crop_size=64,
        det_channels=4,
        gen_channels=4,
        attention=True,
        disc_channels=4,
        det_levels=2,
        coarse_levels=2,
        coarse_dilations=(2,),
        refine_dilations=(2,),
        disc_fc_dim=16,
    ),
    "small": ModelProfile(
        name="small",
        crop_size=128,
        det_channels=8,
        gen_channels=8,
        attention=True,
        disc_channels=32,
        det_levels=4,
        coarse_levels=3,
        # Trimmed from (2, 4) / (2, 4, 8) to keep the generator under ~10 ms on 2 CPU cores.
        coarse_dilations=(2,),
        refine_dilations=(2, 4),
        disc_fc_dim=512,
    ),
    "full": ModelProfile(
        name="full",
        crop_size=256,
        det_channels=16,
        gen_channels=32,
        attention=True,
        disc_channels=64,
        det_levels=4,
        coarse_levels=4,
        coarse_dilations=(2, 4, 8),
        refine_dilations=(2, 4, 8, 16),
        disc_fc_dim=1024,
    ),
}


# The same networks with the face prior as a generator input: a profile of its own, because the
# generator's first layer (and so every exported file and engine) differs.
PROFILES["small_prior"] = replace(PROFILES["small"], name="small_prior", prior_input=True)
PROFILES["tiny_prior"] = replace(PROFILES["tiny"], name="tiny_prior", prior_input=True)


def get_profile(name: str) -> ModelProfile:
    """The profile called ``name``; ValueError naming the valid profiles otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown model profile {name!r}; valid profiles: {sorted(PROFILES)}") from None
