"""Visible-face segmenter: network, losses, config, training with exact resume, ONNX export through engines/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from engines.model_digest import check_listed
from engines.occlusion_mask import segment_occlusions
from engines.onnxruntime_engine import OnnxRuntimeEngine
from tests.training.segmenter_fixtures import synthetic_face_set
from training.export_segmenter import export_segmenter
from training.models.segmenter import SegmenterConfig, VisibleFaceSegmenter, build_segmenter, load_weights
from training.segmentation_losses import SegmentationLossConfig, dice_loss, ohem_bce, segmentation_loss
from training.segmenter_config import SegmenterConfigError, load_config
from training.train_segmenter import load_checkpoint, main

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "training" / "configs" / "segmenter_tiny.yaml"


def test_segmenter_shapes_and_imagenet_encoder() -> None:
    model = build_segmenter(imagenet=False).eval()
    x = torch.rand(2, 3, 128, 128)
    logits = model(x)
    assert logits.shape == (2, 2, 128, 128) and logits.dtype == torch.float32
    with torch.no_grad():
        p = model.probabilities(x)
    assert float(p.min()) >= 0 and float(p.max()) <= 1
    before = model.features.state_dict()["0.0.weight"].clone()
    assert "ImageNet" in model.load_imagenet()
    assert not torch.equal(before, model.features.state_dict()["0.0.weight"])
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_a_one_channel_checkpoint_initialises_both_outputs() -> None:
    model = VisibleFaceSegmenter()
    state = model.state_dict()
    state["head.weight"] = torch.randn(1, *state["head.weight"].shape[1:])
    state["head.bias"] = torch.tensor([0.25])
    assert "copied" in load_weights(model, state)
    head = model.state_dict()
    assert torch.equal(head["head.weight"][0], head["head.weight"][1]) and float(head["head.bias"][1]) == 0.25


def test_load_imagenet_rejects_a_foreign_state_dict(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="missing 'features.0.0.weight'"):
        VisibleFaceSegmenter().load_imagenet(bad)
    with pytest.raises(ValueError, match="decoder_channels"):
        SegmenterConfig((8, 8))  # type: ignore[arg-type]


def test_losses() -> None:
    target = torch.zeros(2, 1, 32, 32)
    target[:, :, 8:24, 8:24] = 1
    perfect = (target * 2 - 1) * 20
    assert float(dice_loss(perfect, target)) < 1e-3
    assert float(ohem_bce(perfect, target)) < 1e-3
    # A few wrong pixels: OHEM averages over the hardest, so it weighs them far more than plain BCE.
    wrong = perfect.clone()
    wrong[:, :, 0:2, 0:8] = 5.0
    plain = torch.nn.functional.binary_cross_entropy_with_logits(wrong, target)
    assert float(ohem_bce(wrong, target, ratio=0.05, min_kept=16)) > 5 * float(plain)
    total, parts = segmentation_loss(wrong, target, SegmentationLossConfig())
    assert float(total) == pytest.approx(parts["dice"] + parts["bce_ohem"], rel=1e-5)
    two, parts2 = segmentation_loss(torch.cat([wrong, perfect], 1), torch.cat([target, target], 1))
    assert parts2["dice_region"] < 1e-3 and float(two) == pytest.approx(float(total), rel=1e-3)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        dice_loss(torch.zeros(2, 32, 32), torch.zeros(2, 32, 32))
    with pytest.raises(ValueError, match="ohem_ratio"):
        SegmentationLossConfig(ohem_ratio=0.0)


def test_shipped_configs_load_and_typos_are_named(tmp_path: Path) -> None:
    small = load_config(REPO / "training" / "configs" / "segmenter_small.yaml")
    assert small.crop_size == 128 and "cup" not in small.synthesis.kinds
    assert all(s.holdout_fraction == 0.15 and s.split_seed == 0 for s in small.sources)
    raw = yaml.safe_load(TINY.read_text())
    raw["learning_rate"] = 0.1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(SegmenterConfigError, match="learning_rate"):
        load_config(bad)


def _tiny(tmp_path: Path) -> Path:
    faces = tmp_path / "faces.npz"
    synthetic_face_set(4, 64).save(faces)
    raw = yaml.safe_load(TINY.read_text())
    raw["sources"] = [{"kind": "faceset", "path": str(faces)}]
    raw["val_sources"] = [{"kind": "faceset", "path": str(faces)}]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_training_resumes_exactly_and_exports_through_engines(tmp_path: Path) -> None:
    config = _tiny(tmp_path)
    assert main(["--config", str(config), "--out", str(tmp_path / "straight")]) == 0
    assert main(["--config", str(config), "--out", str(tmp_path / "split"), "--max-steps", "3"]) == 0
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")["step"] == 3
    assert main(["--config", str(config), "--out", str(tmp_path / "split"), "--resume"]) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "final.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "final.pt")
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    log = (tmp_path / "straight" / "log.txt").read_text()
    assert "val step 6" in log and "step 6 loss" in log
    assert (tmp_path / "straight" / "checkpoints" / "best.pt").is_file()

    result = export_segmenter(tmp_path / "straight" / "checkpoints" / "final.pt", tmp_path / "export")
    assert max(result.max_abs_diff.values()) < 1e-3
    check_listed(result.pt2_path)  # the torch backends' gate accepts the new archive
    engine = OnnxRuntimeEngine(result.onnx_path, intra_threads=1)
    assert engine.info.role == "segmenter" and engine.info.iterations == 6
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    out = engine.run({"image": x})
    assert out["face"].shape == out["region"].shape == (2, 1, 64, 64)
    model = VisibleFaceSegmenter()
    model.load_state_dict(a["model"])
    with torch.no_grad():
        expected = model.eval().probabilities(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out["face"], expected[:, 0:1], atol=1e-4)
    np.testing.assert_allclose(out["region"], expected[:, 1:2], atol=1e-4)
    masks, visible_share = segment_occlusions(engine, x)
    assert masks.shape == (2, 64, 64) and masks.dtype == np.uint8 and visible_share.shape == (2,)
    with pytest.raises(ValueError, match="segmenter"):
        segment_occlusions(OnnxRuntimeEngine(REPO / "models" / "small" / "detector.onnx"), x)


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_init_from_warm_starts_a_new_run(tmp_path: Path) -> None:
    config = _tiny(tmp_path)
    assert main(["--config", str(config), "--out", str(tmp_path / "a"), "--max-steps", "2"]) == 0
    raw = yaml.safe_load(config.read_text())
    raw["init_from"] = str(tmp_path / "a" / "checkpoints" / "final.pt")
    warm = tmp_path / "warm.yaml"
    warm.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(warm), "--out", str(tmp_path / "b"), "--max-steps", "1"]) == 0
    assert "initialised from" in (tmp_path / "b" / "log.txt").read_text()
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "final.pt")["step"] == 1
