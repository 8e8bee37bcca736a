from __future__ import annotations

import numpy as np
import pytest

from stream.restore.smoother import MaskSmoother, SmootherConfig

S = 64


def disc(cx: float, cy: float, r: float, size: int = S) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (((xx - cx) ** 2 + (yy - cy) ** 2) <= r * r).astype(np.float32)


def noisy(mask: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return np.clip(mask + rng.normal(0, sigma, mask.shape), 0, 1).astype(np.float32)


def mean_change(frames: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(b - a).mean() for a, b in zip(frames, frames[1:], strict=False)]))


def test_static_noisy_mask_flickers_far_less_than_input() -> None:
    rng = np.random.default_rng(0)
    truth = disc(32, 36, 14)
    inputs = [noisy(truth, rng, 0.3) for _ in range(60)]
    smoothed = MaskSmoother()
    # Baseline: the same clean-up and feather, but no temporal filter and no hysteresis.
    per_frame = MaskSmoother(
        SmootherConfig(alpha_min=1.0, alpha_max=1.0, on_threshold=0.5, off_threshold=0.5)
    )
    out = [smoothed.update(7, p) for p in inputs]
    base = [per_frame.update(7, p) for p in inputs]
    warm = 5
    change_in = mean_change(inputs[warm:])
    change_base = mean_change(base[warm:])
    change_out = mean_change(out[warm:])
    assert change_base > 0.002, "the baseline must actually flicker for this test to mean anything"
    assert change_out < 0.05 * change_in, f"output change {change_out:.5f} vs input {change_in:.5f}"
    assert change_out < 0.1 * change_base, f"output change {change_out:.5f} vs per-frame {change_base:.5f}"
    # And it is the right mask: the occluded disc fully on, far pixels exactly 0.
    last = out[-1]
    assert np.all(last[truth > 0] == 1.0)
    cfg = smoothed.config
    far = disc(32, 36, 14 + cfg.dilate_px + cfg.feather_px + 2) == 0
    assert np.all(last[far] == 0.0)
    assert last.dtype == np.float32 and last.shape == (S, S) and 0.0 <= last.min() and last.max() <= 1.0


@pytest.mark.parametrize("k", [2])
def test_appearing_and_vanishing_occluder_is_followed_within_k_frames(k: int) -> None:
    rng = np.random.default_rng(1)
    truth = disc(30, 40, 12)
    sm = MaskSmoother()
    for _ in range(10):
        assert not sm.update(1, noisy(np.zeros((S, S), np.float32), rng, 0.1)).any()
    outs = [sm.update(1, noisy(truth * 0.9, rng, 0.1)) for _ in range(k)]
    assert np.mean(outs[-1][truth > 0] == 1.0) > 0.99, "mask must be on within k frames of appearing"
    for _ in range(10):
        sm.update(1, noisy(truth * 0.9, rng, 0.1))
    outs = [sm.update(1, noisy(np.zeros((S, S), np.float32), rng, 0.1)) for _ in range(k)]
    assert not outs[-1].any(), "mask must be off within k frames of vanishing"


def _follow(config: SmootherConfig, speed_px: float) -> tuple[float, float]:
    """Worst recall (truth covered) and precision (output within the dilated truth) over a moving disc."""
    rng = np.random.default_rng(2)
    sm = MaskSmoother(config)
    recall, precision = [], []
    for f in range(14):
        truth = disc(8 + speed_px * f, 32, 8) > 0
        allowed = disc(8 + speed_px * f, 32, 8 + config.dilate_px + 1) > 0
        out = sm.update(3, noisy(truth.astype(np.float32), rng, 0.1)) > 0
        if f >= 3:
            recall.append((out & truth).sum() / truth.sum())
            precision.append((out & allowed).sum() / max(out.sum(), 1))
    return min(recall), min(precision)


def test_moving_occluder_is_followed_without_lag() -> None:
    # 4 crop px per frame at S=64 is 16 px per frame in a 256 crop: a hand sweeping over the face.
    recall, precision = _follow(SmootherConfig(feather_px=0), 4.0)
    assert recall > 0.98 and precision > 0.95, f"recall {recall:.3f} precision {precision:.3f}"
    # A fixed slow EMA with the same stability would trail behind: the adaptive weight is what helps.
    recall, precision = _follow(SmootherConfig(feather_px=0, alpha_max=0.2), 4.0)
    assert recall < 0.9 and precision < 0.9


def test_output_at_t_does_not_depend_on_later_inputs() -> None:
    rng = np.random.default_rng(3)
    prefix = [noisy(disc(32, 32, 10), rng, 0.2) for _ in range(10)]
    tail_a = [noisy(disc(32, 32, 10), rng, 0.2) for _ in range(5)]
    tail_b = [noisy(disc(20, 20, 16), rng, 0.3) for _ in range(5)]
    sm_a, sm_b = MaskSmoother(), MaskSmoother()
    out_a = [sm_a.update(0, p) for p in prefix + tail_a]
    out_b = [sm_b.update(0, p) for p in prefix + tail_b]
    for t in range(len(prefix)):
        assert np.array_equal(out_a[t], out_b[t]), f"frame {t} changed with inputs after it"
    assert not np.array_equal(out_a[-1], out_b[-1])


def test_tracks_are_independent_and_forget_drops_state() -> None:
    rng = np.random.default_rng(4)
    seq = [noisy(disc(32, 32, 10), rng, 0.2) for _ in range(6)]
    alone = MaskSmoother()
    ref = [alone.update(1, p) for p in seq]
    mixed = MaskSmoother()
    for p, r in zip(seq, ref, strict=True):
        mixed.update(2, 1.0 - p)  # another face, interleaved
        assert np.array_equal(mixed.update(1, p), r)
    assert mixed.track_ids == {1, 2}
    mixed.forget(1)
    mixed.forget(99)  # unknown ids are fine
    assert mixed.track_ids == {2}
    assert np.array_equal(mixed.update(1, seq[0]), MaskSmoother().update(1, seq[0]))
    mixed.retain([1])
    assert mixed.track_ids == {1}


def test_bad_inputs_are_rejected() -> None:
    sm = MaskSmoother()
    with pytest.raises(ValueError, match=r"\(S, S\) float"):
        sm.update(0, np.zeros((S, S, 1), np.float32))
    with pytest.raises(ValueError, match=r"\(S, S\) float"):
        sm.update(0, np.zeros((S, S), np.uint8))
    with pytest.raises(ValueError, match="off_threshold"):
        SmootherConfig(on_threshold=0.3, off_threshold=0.5)
