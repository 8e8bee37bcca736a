"""The generator profiles that take the rendered face prior as a third input."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
import torch

from training.export import export_models, sample_inputs, save_checkpoint
from training.models import build_detector, build_discriminator, build_generator, get_profile

TINY_PRIOR = get_profile("tiny_prior")


def test_prior_profile_differs_only_in_the_prior_input() -> None:
    plain, prior = get_profile("small"), get_profile("small_prior")
    assert prior.prior_input and not plain.prior_input
    assert {**vars(prior), "name": "small", "prior_input": False} == vars(plain)


def test_generator_demands_the_prior_its_profile_declares() -> None:
    image, mask, prior = sample_inputs(TINY_PRIOR, 2)
    with_prior, without = build_generator(TINY_PRIOR), build_generator(get_profile("tiny"))
    assert with_prior(image, mask, prior).refined.shape == image.shape
    with pytest.raises(ValueError, match="needs a prior"):
        with_prior(image, mask)
    with pytest.raises(ValueError, match="takes no prior"):
        without(image, mask, prior)
    with pytest.raises(ValueError, match="shaped like the image"):
        with_prior(image, mask, prior[:, :, :-1])


def test_the_prior_changes_the_output_inside_the_hole() -> None:
    torch.manual_seed(0)
    generator = build_generator(TINY_PRIOR).eval()
    image, mask, prior = sample_inputs(TINY_PRIOR, 2)
    with torch.no_grad():
        a = generator(image, mask, prior).coarse
        b = generator(image, mask, torch.zeros_like(prior)).coarse
    assert float((a - b).abs().max()) > 1e-4


def test_export_has_a_prior_input_and_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ckpt = save_checkpoint(
        tmp_path / "step_1.pt",
        profile="tiny_prior",
        detector=build_detector(TINY_PRIOR),
        generator=build_generator(TINY_PRIOR),
        discriminator=build_discriminator(TINY_PRIOR),
        optimizers={},
        step=1,
        stage="refine_joint",
        config={"note": "test"},
        perceptual_backbone="random-vgg16 (untrained, tests only)",
        training_data="none",
    )
    report = export_models(ckpt, tmp_path / "out")
    session = ort.InferenceSession(
        str(tmp_path / "out" / "generator.onnx"), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == ["image", "mask", "prior"]
    assert max(report.max_abs_diff.values()) < 1e-4
