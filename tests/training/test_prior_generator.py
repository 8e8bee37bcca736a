"""The generator profiles that take the rendered face prior as a third input."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
import torch

from training.export import ExportReport, export_models, sample_inputs, save_checkpoint
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


def export_untrained_prior_models(root: Path, seed: int = 1) -> ExportReport:
    """An untrained tiny_prior checkpoint exported to ``root / "out"`` (the plumbing, not the quality)."""
    torch.manual_seed(seed)
    ckpt = save_checkpoint(
        root / "step_1.pt",
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
    return export_models(ckpt, root / "out")


def test_export_has_a_prior_input_and_matches_torch(tmp_path: Path) -> None:
    report = export_untrained_prior_models(tmp_path)
    session = ort.InferenceSession(
        str(tmp_path / "out" / "generator.onnx"), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == ["image", "mask", "prior"]
    assert max(report.max_abs_diff.values()) < 1e-4


# ------------------------------------------------------------------------------------ training with it
REPO = Path(__file__).resolve().parents[2]
PRIOR = REPO / "models" / "small" / "prior.npz"


def test_guided_training_warm_starts_from_a_plain_checkpoint_and_exports_a_prior_input(
    tmp_path: Path,
) -> None:
    from tests.training.test_train import tiny_config_file
    from training.export import load_checkpoint
    from training.train import main

    plain = tiny_config_file(tmp_path / "plain", max_steps=2, export=False)
    assert main(["--config", str(plain), "--out", str(tmp_path / "plain_run")]) == 0
    plain_ckpt = tmp_path / "plain_run" / "checkpoints" / "final.pt"
    guided = tiny_config_file(
        tmp_path / "guided",
        profile="tiny_prior",
        prior_model=str(PRIOR),
        init_from=str(plain_ckpt),
        max_steps=2,
    )
    assert main(["--config", str(guided), "--out", str(tmp_path / "guided_run")]) == 0
    ckpt = load_checkpoint(tmp_path / "guided_run" / "checkpoints" / "final.pt")
    old = load_checkpoint(plain_ckpt)["generator"]["coarse.stem.0.weight"]
    assert ckpt["generator"]["coarse.stem.0.weight"].shape[1] == old.shape[1] + 3
    session = ort.InferenceSession(
        str(tmp_path / "guided_run" / "export" / "generator.onnx"), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == ["image", "mask", "prior"]
    grids = sorted((tmp_path / "guided_run" / "samples").glob("*.png"))
    assert grids  # the sample grid has the guide column


def test_prior_profile_without_a_prior_model_is_a_config_error(tmp_path: Path) -> None:
    from tests.training.test_train import tiny_config_file
    from training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="prior_model"):
        load_config(tiny_config_file(tmp_path, profile="tiny_prior"))
