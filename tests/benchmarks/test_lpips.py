"""benchmarks.lpips against the reference ST-LPIPS of the installed stlpips-pytorch package.

The reference is the package's own ``stlpips.LPIPS(net="alex", variant="shift_tolerant")``, imported with
stub modules for what it imports at module level but never calls on this path (torchvision, IPython,
torchsummary); the stubs and the package's modules are removed from ``sys.modules`` afterwards.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import lpips  # noqa: E402

RTOL = 1e-5
ATOL = 1e-7


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


@pytest.fixture(scope="module")
def reference() -> Iterator[Any]:
    """The package's stlpips.LPIPS (alex, shift-tolerant, pretrained), eval mode."""
    pytest.importorskip(
        "stlpips_pytorch",
        reason="stlpips-pytorch not installed (pip install --no-deps stlpips-pytorch==0.0.2)",
    )
    before = set(sys.modules)
    tv_models = _stub("torchvision.models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "torchvision", _stub("torchvision", models=tv_models))
        mp.setitem(sys.modules, "torchvision.models", tv_models)
        mp.setitem(sys.modules, "IPython", _stub("IPython", embed=lambda *a, **k: None))
        mp.setitem(sys.modules, "torchsummary", _stub("torchsummary", summary=lambda *a, **k: None))
        try:
            from stlpips_pytorch import stlpips

            ref = stlpips.LPIPS(net="alex", variant="shift_tolerant", pretrained=True, verbose=False)
            yield ref.eval()
        finally:
            for name in set(sys.modules) - before:
                if name.startswith("stlpips_pytorch"):
                    del sys.modules[name]


@pytest.fixture(scope="module")
def metric() -> lpips.LpipsMetric:
    path = lpips.find_weights()
    if path is None:
        pytest.skip("stlpips-pytorch weights not installed (pip install --no-deps stlpips-pytorch==0.0.2)")
    return lpips.LpipsMetric(path)  # not create_or_none: a network that no longer loads must fail, not skip


def _ref_distance(ref: Any, a: np.ndarray, b: np.ndarray) -> float:
    t = [torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)) for x in (a, b)]
    with torch.no_grad():
        return float(ref(t[0], t[1], normalize=True).reshape(-1)[0])


def _structured(size: int, seed: int) -> np.ndarray:
    """Smooth colour gradient with a few discs and lines: a picture with edges, rgb01 float32."""
    rng = np.random.default_rng(seed)
    small = rng.random((4, 4, 3)).astype(np.float32)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(4):
        c = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(img, c, int(rng.integers(size // 16, size // 4)), tuple(rng.random(3).tolist()), -1)
    cv2.line(img, (0, size // 3), (size - 1, size // 2), (1.0, 1.0, 1.0), max(1, size // 64))
    return np.clip(img, 0.0, 1.0)


def _pairs(size: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(size)
    noise_a = rng.random((size, size, 3), dtype=np.float32)
    noise_b = rng.random((size, size, 3), dtype=np.float32)
    s = _structured(size, 1)
    noisy = np.clip(s + rng.normal(0, 0.08, s.shape).astype(np.float32), 0, 1)
    blurred = cv2.GaussianBlur(s, (0, 0), 2.0)
    shifted = np.roll(s, (1, 2), axis=(0, 1))
    if size >= 128:  # a 256 px pair costs ~0.3 s per implementation on a 2-core CPU: two are enough
        return [("structured+noise", s, noisy), ("shift 1,2 px", s, shifted)]
    other = _structured(size, 2)
    return [
        ("random", noise_a, noise_b),
        ("structured+noise", s, noisy),
        ("other", s, other),
        ("blur", s, blurred),
    ]


@pytest.mark.parametrize("size", [64, 256])
def test_matches_the_reference_implementation(reference: Any, metric: lpips.LpipsMetric, size: int) -> None:
    for label, a, b in _pairs(size):
        want = _ref_distance(reference, a, b)
        got = metric.distance(a, b)
        assert got == pytest.approx(want, rel=RTOL, abs=ATOL), label
        assert want > 1e-4, label  # a real difference, not two zeros


def test_batched_distances_match_the_reference(reference: Any, metric: lpips.LpipsMetric) -> None:
    s = _structured(64, 3)
    others = [np.clip(s + d, 0, 1).astype(np.float32) for d in (0.05, -0.1, 0.2)] + [_structured(64, 4)]
    got = metric.distances(s, others)
    want = [_ref_distance(reference, s, o) for o in others]
    assert got == pytest.approx(want, rel=RTOL, abs=ATOL)


def test_reference_loaded_every_weight_of_the_file(reference: Any, metric: lpips.LpipsMetric) -> None:
    """The package loads with strict=False: make sure it did not silently keep random weights."""
    file_state = torch.load(metric.weights, map_location="cpu", weights_only=True)
    ref_state = reference.state_dict()
    for k, v in file_state.items():
        assert torch.equal(ref_state[k], v), k


def test_identical_images_give_zero(metric: lpips.LpipsMetric) -> None:
    s = _structured(64, 5)
    assert metric.distance(s, s) == pytest.approx(0.0, abs=1e-7)
    u8 = np.rint(s * 255).astype(np.uint8)
    assert metric.distance(u8, u8.astype(np.float32) / 255.0) == pytest.approx(0.0, abs=1e-7)


def test_grows_with_noise_amplitude_and_is_symmetric(metric: lpips.LpipsMetric) -> None:
    s = _structured(64, 6)
    noise = np.random.default_rng(0).normal(0, 1, s.shape).astype(np.float32)
    amps = (0.01, 0.03, 0.1, 0.3)
    noisy = [np.clip(s + a * noise, 0, 1) for a in amps]
    d = metric.distances(s, noisy)
    assert all(x < y for x, y in zip(d, d[1:], strict=False)), d
    for n, dn in zip(noisy, d, strict=True):
        assert metric.distance(n, s) == pytest.approx(dn, rel=1e-5)


def test_rejects_mismatched_or_tiny_images(metric: lpips.LpipsMetric) -> None:
    with pytest.raises(ValueError, match="same shape"):
        metric.distance(np.zeros((64, 64, 3), np.float32), np.zeros((64, 48, 3), np.float32))
    with pytest.raises(ValueError, match=">= 32"):
        metric.distance(np.zeros((16, 16, 3), np.float32), np.zeros((16, 16, 3), np.float32))
    assert metric.distances(np.zeros((64, 64, 3), np.float32), []) == []


def test_info_names_the_variant(metric: lpips.LpipsMetric) -> None:
    info = metric.info()
    assert info["note"] == "ST-LPIPS (alex, shift-tolerant; stlpips-pytorch 0.0.2)" == lpips.NOTE
    assert info["weights"] == "alex_shift_tolerant.pth" and len(info["sha256"]) == 64


def test_missing_package_or_torch_gives_none_and_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(lpips, "find_weights", lambda: None)
    with caplog.at_level(logging.WARNING, logger="benchmarks.lpips"):
        assert lpips.LpipsMetric.create_or_none() is None
    assert len(caplog.records) == 1 and "stlpips-pytorch is not installed" in caplog.text
    caplog.clear()
    monkeypatch.setattr(lpips, "torch_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="benchmarks.lpips"):
        assert lpips.LpipsMetric.create_or_none() is None
    assert len(caplog.records) == 1 and "torch is not installed" in caplog.text


def test_a_broken_or_foreign_weight_file_gives_none_and_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    foreign = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    for path, words in ((bad, "cannot read"), (foreign, "do not fit")):
        caplog.clear()
        monkeypatch.setattr(lpips, "find_weights", lambda p=path: p)
        with caplog.at_level(logging.WARNING, logger="benchmarks.lpips"):
            assert lpips.LpipsMetric.create_or_none() is None
        assert len(caplog.records) == 1 and words in caplog.text
