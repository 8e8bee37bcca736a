"""benchmarks.quality end to end on a tiny FMOR data set with tiny real ONNX models exported here."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from benchmarks import lpips, quality  # noqa: E402
from engines.base import METADATA_KEY, ModelInfo  # noqa: E402
from training.identity import find_sface_model  # noqa: E402

SIZE = 64
KEYS = {"psnr", "ssim", "l1", "l2", "psnr_mask", "id_cosine", "lpips"}
METHODS = {"masked_input", "telea", "navier_stokes", "ours"}
GREEN_RGB_U8 = (0, 255, 0)


class _GreenDetector(torch.nn.Module):
    """Hand-set 1x1 conv: sigmoid(20 (G - R - B - 0.5)) is ~1 on pure green, ~0 on skin tones."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-20.0, 20.0, -20.0]).view(1, 3, 1, 1))
            self.conv.bias.fill_(-10.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(image))


class _TinyGenerator(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1)
        )

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(torch.cat([image * (1 - mask), mask], dim=1)))


def _export(module: torch.nn.Module, path: Path, role: str) -> None:
    names = (["image"], ["mask"]) if role == "detector" else (["image", "mask"], ["restored"])
    args = tuple(torch.rand(1, c, SIZE, SIZE) for c in ((3,) if role == "detector" else (3, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            dynamo=False,
            input_names=names[0],
            output_names=names[1],
            dynamic_axes={n: {0: "batch"} for n in names[0] + names[1]},
            opset_version=17,
        )
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, ModelInfo(role=role, crop_size=SIZE, profile="test-tiny").to_json()
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models")
    _export(_GreenDetector(), d / "detector.onnx", "detector")
    _export(_TinyGenerator(), d / "generator.onnx", "generator")
    return d


def _face_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth skin-toned RGB u8 image (R 0.5-0.9, G 0.3-0.6, B 0.2-0.5: never detected as green)."""
    lo, hi = np.array([0.5, 0.3, 0.2]), np.array([0.9, 0.6, 0.5])
    small = lo + rng.random((4, 4, 3)) * (hi - lo)
    return np.rint(cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR) * 255).astype(np.uint8)


def _make_dataset(
    root: Path, n: int, *, size: int = SIZE, gt_extra_rows: int = 0, with_gt: bool = True
) -> list:
    """A/ = B/ with a green block, face-mask/ = the block (plus ``gt_extra_rows`` rows below it)."""
    rng = np.random.default_rng(1)
    for sub in ("A", "B", "face-mask"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    blocks = []
    for i in range(n):
        clean = _face_like(rng, size)
        y, x = int(rng.integers(size // 4, size // 2)), int(rng.integers(4, size // 3))
        h, w = size // 4, size // 3
        masked = clean.copy()
        masked[y : y + h, x : x + w] = GREEN_RGB_U8
        gt = np.zeros((size, size), np.uint8)
        gt[y : y + h + gt_extra_rows, x : x + w] = 255
        name = f"img{i:02d}.png"
        cv2.imwrite(str(root / "A" / name), masked[..., ::-1])
        cv2.imwrite(str(root / "B" / name), clean[..., ::-1])
        if with_gt:
            cv2.imwrite(str(root / "face-mask" / name), gt)
        blocks.append((h * w, (h + gt_extra_rows) * w))
    return blocks


def _run(tmp_path: Path, dataset: Path, models: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "out" / "quality.json"
    fixed = ["--models", str(models), "--backend", "onnxruntime", "--device", "cpu"]
    rc = quality.main(["--dataset", str(dataset), "--json", str(out), *fixed, *extra])
    return rc, (json.loads(out.read_text()) if out.is_file() else {})


def test_report_layout_counts_baselines_and_exact_iou(tmp_path: Path, models_dir: Path) -> None:
    _make_dataset(tmp_path / "ds", 3)
    rc, report = _run(tmp_path, tmp_path / "ds", models_dir, "--batch", "2")
    assert rc == 0
    assert report["count"] == 3 and len(report["per_image"]) == 3
    assert set(report["methods"]) == METHODS
    for name, values in report["methods"].items():
        assert set(values) == KEYS, name
    assert set(report["detector"]) == {"mask_iou"}
    assert report["detector"]["mask_iou"] == pytest.approx(
        1.0
    )  # the hand-set detector finds the block exactly
    assert report["crop_size"] == SIZE and report["resized"]["count"] == 0
    assert report["backend"] == "onnxruntime" and report["device"] == "cpu"
    assert report["psnr_mask_region"] == ["ground_truth"]
    m = report["methods"]
    # Inpainting a pure-green block with skin colours must beat leaving the block there.
    for method in ("telea", "navier_stokes"):
        assert m[method]["psnr_mask"] > m["masked_input"]["psnr_mask"] + 3.0
        assert m[method]["l1"] < m["masked_input"]["l1"]
    for values in m.values():
        assert 0.0 <= values["l1"] <= 1.0 and 0.0 <= values["l2"] <= 1.0 and -1.0 <= values["ssim"] <= 1.0
        assert values["l2"] <= values["l1"]  # |e| <= 1 so e^2 <= |e|
    if find_sface_model() is not None:
        assert all(-1.0 <= v["id_cosine"] <= 1.0 for v in m.values())
    else:
        assert all(v["id_cosine"] is None for v in m.values())
    if lpips.find_weights() is not None:
        assert all(v["lpips"] >= 0.0 for v in m.values())
        # Skin-coloured inpainting is perceptually closer to the clean face than a pure-green block.
        assert m["telea"]["lpips"] < m["masked_input"]["lpips"]
        assert report["lpips_model"]["note"] == lpips.NOTE and report["notes"]["lpips"].endswith(lpips.NOTE)
        assert all(r["methods"]["ours"]["lpips"] is not None for r in report["per_image"])
    else:
        assert all(v["lpips"] is None for v in m.values()) and report["lpips_model"] is None
    grid = cv2.imread(report["grid"])
    assert grid is not None and grid.shape[1] == 6 * SIZE and grid.shape[0] > 3 * SIZE


def test_iou_against_a_larger_ground_truth_is_the_area_ratio(tmp_path: Path, models_dir: Path) -> None:
    blocks = _make_dataset(tmp_path / "ds", 2, gt_extra_rows=4)
    rc, report = _run(tmp_path, tmp_path / "ds", models_dir)
    assert rc == 0
    expected = np.mean([det / gt for det, gt in blocks])  # detection is a subset of the ground truth
    assert report["detector"]["mask_iou"] == pytest.approx(expected, abs=1e-6)


def test_resizes_other_sizes_and_works_without_ground_truth(tmp_path: Path, models_dir: Path) -> None:
    _make_dataset(tmp_path / "ds", 2, size=96, with_gt=False)
    grid = tmp_path / "grid" / "g.png"
    rc, report = _run(tmp_path, tmp_path / "ds", models_dir, "--grid", str(grid), "--limit", "1")
    assert rc == 0
    assert report["count"] == 1
    assert report["resized"] == {"count": 1, "from_sizes": {"96x96": 1}}
    assert report["detector"]["mask_iou"] is None and report["psnr_mask_region"] == ["detected"]
    assert report["methods"]["telea"]["psnr_mask"] is not None
    assert grid.is_file()


def test_identity_is_null_without_the_sface_file(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.identity as identity

    monkeypatch.setattr(identity, "find_sface_model", lambda: None)
    _make_dataset(tmp_path / "ds", 1)
    rc, report = _run(tmp_path, tmp_path / "ds", models_dir)
    assert rc == 0
    assert all(v["id_cosine"] is None for v in report["methods"].values())
    assert report["identity_model"] is None


def test_lpips_is_null_without_the_weights(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(lpips, "find_weights", lambda: None)
    _make_dataset(tmp_path / "ds", 1)
    rc, report = _run(tmp_path, tmp_path / "ds", models_dir)
    assert rc == 0
    assert all(v["lpips"] is None for v in report["methods"].values())
    assert report["lpips_model"] is None and "left out" in report["notes"]["lpips"]
    assert caplog.text.count("lpips metric left out") == 1


def test_user_mistakes_give_one_line_errors(
    tmp_path: Path, models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _make_dataset(tmp_path / "ds", 1)
    assert _run(tmp_path, tmp_path / "ds", tmp_path / "no-models")[0] == 2
    assert "detector.onnx" in caplog.text
    assert _run(tmp_path, tmp_path / "missing", models_dir)[0] == 2
    (tmp_path / "ds" / "B" / "img00.png").unlink()
    assert _run(tmp_path, tmp_path / "ds", models_dir)[0] == 2
    assert "no clean counterpart" in caplog.text


def test_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        quality.main(["--help"])
    assert exc.value.code == 0
    assert "--dataset" in capsys.readouterr().out


def test_baselines_change_only_masked_pixels() -> None:
    rng = np.random.default_rng(3)
    img = _face_like(rng, SIZE).astype(np.float32) / 255.0
    mask = np.zeros((SIZE, SIZE), bool)
    mask[20:30, 20:40] = True
    grown = quality.dilate(mask, 3)
    assert grown.sum() > mask.sum() and grown[mask].all()
    for method in (cv2.INPAINT_TELEA, cv2.INPAINT_NS):
        out = quality.composite(quality.opencv_inpaint(img, grown, method), img, grown)
        assert np.array_equal(out[~grown], img[~grown])
        assert not np.allclose(out[grown], img[grown])
