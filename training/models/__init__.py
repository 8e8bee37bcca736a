"""FMODR networks: face-mask region detector, coarse-to-refine generator, global-masked discriminator."""

from __future__ import annotations

from training.models.attention import SelfAdaptiveContextualAttention
from training.models.backbones import FeatureBackbone, load_perceptual_backbone
from training.models.detector import MaskRegionDetector, build_detector
from training.models.discriminator import DiscriminatorLogits, GlobalMaskedDiscriminator, build_discriminator
from training.models.generator import FMODRGenerator, GeneratorOutput, build_generator, composite
from training.models.profiles import PROFILES, ModelProfile, get_profile

__all__ = [
    "PROFILES",
    "DiscriminatorLogits",
    "FMODRGenerator",
    "FeatureBackbone",
    "GeneratorOutput",
    "GlobalMaskedDiscriminator",
    "MaskRegionDetector",
    "ModelProfile",
    "SelfAdaptiveContextualAttention",
    "build_detector",
    "build_discriminator",
    "build_generator",
    "composite",
    "get_profile",
    "load_perceptual_backbone",
]
