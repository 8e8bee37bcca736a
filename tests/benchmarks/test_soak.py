"""The soak benchmark: looping source accounting, slope fit, and a short real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import benchmarks.soak as soak_module
from benchmarks.report import write_report
from benchmarks.soak import LoopingFileSource, Sample, slope_per_frame, soak
from tests.stream.conftest import write_clip


def test_looping_source_continues_indices_and_pts(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", frames=20)
    src = LoopingFileSource(clip.path, 50)
    frames = list(src)
    src.close()
    assert [f.index for f in frames] == list(range(50)) and src.loops == 2
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False))
    assert src.info.frame_count == 50


def test_slope_fit() -> None:
    samples = [Sample(f, 1000 + 3 * f, 0.0) for f in range(0, 1000, 100)]
    assert slope_per_frame(samples) == pytest.approx(3.0)
    assert slope_per_frame(samples[:2]) is None


def test_short_soak_accounts_for_every_frame(tmp_path: Path) -> None:
    r = soak(40, warmup=10, sample_every=10, output=tmp_path / "o.mp4", models=None)
    acc = r["accounting"]
    assert acc["exact"] and acc["frames_out"] == 40 and acc["restore_calls"] == 40
    assert len(r["rss"]["samples"]) == 4 and r["rss"]["slope_bytes_per_frame"] is not None
    assert r["heap_trim"] is None and r["rss"]["between_trims"] is None  # the trim is opt-in
    assert len(r["rss"]["by_kind"]["samples"]) == 4
    assert r["psnr_outside_faces_db"]["frames"] == 4


def test_soak_writes_partial_reports_then_the_full_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict] = []
    ckpt = tmp_path / "soak.json"

    def spy(report: dict, path: Path) -> None:
        seen.append(json.loads(json.dumps(report)))
        write_report(report, path)

    monkeypatch.setattr(soak_module, "write_report", spy)
    r = soak(
        30,
        warmup=5,
        sample_every=5,
        output=tmp_path / "o.mp4",
        models=None,
        checkpoint=ckpt,
        checkpoint_every=10,
    )
    assert [p["frames_done"] for p in seen] == [10, 20]
    assert all(p["complete"] is False for p in seen)
    assert json.loads(ckpt.read_text())["frames_done"] == 20
    assert r["complete"] is True and r["accounting"]["exact"]


def test_fifth_to_fifth_growth_ignores_single_spikes_and_refit_rewrites_a_report(tmp_path: Path) -> None:
    from benchmarks.soak import growth_between_fifths, main, rss_fit

    flat = [Sample(f, 500_000_000 + (3_000_000 if f % 7 == 0 else 0), 0.0) for f in range(0, 100_000, 250)]
    g = growth_between_fifths(flat)
    assert g is not None and abs(g["kb_per_10k_frames"]) < 1e-9, "spikes do not move the medians"
    growing = [Sample(f, 500_000_000 + 10 * f, 0.0) for f in range(0, 100_000, 250)]  # 10 B/frame
    fit = rss_fit([s for s in growing if s.frames >= 5_000])
    assert fit["slope_kb_per_10k_frames"] == pytest.approx(100.0)
    assert fit["growth_between_fifths"]["kb_per_10k_frames"] == pytest.approx(100.0, rel=0.02)
    assert fit["slope_stderr_kb_per_10k_frames"] == pytest.approx(0.0, abs=1e-6)
    report = tmp_path / "r.json"
    write_report({"rss": {"warmup_frames": 5_000, "samples": [[s.frames, s.rss] for s in growing]}}, report)
    assert main(["--summarise", str(report)]) == 0
    assert json.loads(report.read_text())["rss"]["slope_kb_per_10k_frames"] == pytest.approx(100.0)


def test_fit_between_trims_sees_the_trend_under_the_trim_sawtooth(tmp_path: Path) -> None:
    from benchmarks.soak import between_trims, main, rss_fit

    # 2 B/frame of real growth; every trim frame (a multiple of 1000) samples 12 MB low for an instant.
    samples = [
        Sample(f, 500_000_000 + 2 * f - (12_000_000 if f % 1000 == 0 else 0), 0.0)
        for f in range(5_000, 100_000, 250)
    ]
    kept = between_trims(samples, 1000)
    assert len(kept) == len(samples) * 3 // 4 and all(s.frames % 1000 for s in kept)
    assert rss_fit(kept)["slope_kb_per_10k_frames"] == pytest.approx(20.0)
    assert rss_fit(kept)["slope_stderr_kb_per_10k_frames"] == pytest.approx(0.0, abs=1e-6)
    assert between_trims(samples, None) == samples
    report = tmp_path / "r.json"
    write_report(
        {
            "heap_trim": {"available": True, "every_frames": 1000},
            "rss": {"warmup_frames": 5_000, "samples": [[s.frames, s.rss] for s in samples]},
        },
        report,
    )
    assert main(["--summarise", str(report)]) == 0
    refit = json.loads(report.read_text())["rss"]
    assert refit["between_trims"]["slope_kb_per_10k_frames"] == pytest.approx(20.0)
    assert abs(refit["slope_kb_per_10k_frames"] - 20.0) > 1.0, "all samples: the saw-tooth moves the fit"


def test_rss_by_kind_adds_up_to_the_resident_set() -> None:
    from benchmarks.soak import RSS_KINDS, rss_by_kind, rss_bytes

    kinds = rss_by_kind()
    assert kinds is not None and set(kinds) == set(RSS_KINDS)
    assert kinds["file"] > 0 and kinds["anon_other"] + kinds["heap"] > 0
    assert abs(sum(kinds.values()) - rss_bytes()) < 0.1 * rss_bytes()
