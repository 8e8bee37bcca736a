"""benchmarks.masks: its statistics, and one evaluation end to end on synthetic faces (no shared data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from benchmarks.masks import KINDS, METHODS, KindStats, evaluate, write_grid
from engines.onnxruntime_engine import OnnxRuntimeEngine
from tests.training.segmenter_fixtures import synthetic_face_set
from training.export_segmenter import export_segmenter
from training.models.segmenter import build_segmenter
from training.segmenter_config import config_from_dict
from training.train_segmenter import save_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_kind_stats() -> None:
    truth = np.zeros((8, 8), bool)
    truth[2:6, 2:6] = True
    stats = KindStats()
    stats.add(truth.copy(), truth, 64.0)
    stats.add(np.zeros_like(truth), truth, 64.0)
    s = stats.summary()
    assert s["samples"] == 2 and s["iou_mean"] == pytest.approx(0.5) and s["iou_pooled"] == pytest.approx(0.5)
    bare = KindStats()
    flagged = np.zeros_like(truth)
    flagged[0, :4] = True
    bare.add(flagged, np.zeros_like(truth), 40.0)
    bare.add(np.zeros_like(truth), np.zeros_like(truth), 40.0)
    b = bare.summary()
    assert b["fp_share_worst"] == pytest.approx(0.1) and b["fp_share_mean"] == pytest.approx(0.05)
    assert b["faces_with_any_flagged_pixel"] == pytest.approx(0.5)


def test_evaluate_end_to_end(tmp_path: Path) -> None:
    faces = synthetic_face_set(2, 128)
    raw = yaml.safe_load((REPO / "training" / "configs" / "segmenter_tiny.yaml").read_text())
    raw["crop_size"] = 128
    config = config_from_dict(raw)
    model = build_segmenter(imagenet=False)
    ckpt = save_checkpoint(tmp_path / "c.pt", model, torch.optim.AdamW(model.parameters()), 1, config, 0.0)
    exported = export_segmenter(ckpt, tmp_path / "m")
    seg = OnnxRuntimeEngine(exported.onnx_path, intra_threads=1, max_batch=64)
    det = OnnxRuntimeEngine(REPO / "models" / "small" / "detector.onnx", intra_threads=1, max_batch=64)
    meshes = iter([faces.mesh[0], None] * 100)
    rows: list[np.ndarray] = []
    result = evaluate({"main": faces}, seg, det, lambda _: next(meshes), per_face=1,
                      grid_rows=rows)  # fmt: skip
    per_kind = result["main"]["per_kind"]
    assert tuple(per_kind) == KINDS and all(tuple(v) == METHODS for v in per_kind.values())
    assert "fp_share_mean" in per_kind["bare"]["segmenter"]
    for kind in KINDS[1:]:
        for method in METHODS:
            assert 0.0 <= per_kind[kind][method]["iou_pooled"] <= 1.0
    assert sum(result["main"]["mesh_missed_on_occluded_crop"].values()) == len(KINDS)
    assert len(rows) == len(KINDS)
    write_grid(rows, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 1000
