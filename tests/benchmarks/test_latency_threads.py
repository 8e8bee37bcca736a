"""benchmarks.latency's bound_by with the extra "faces" thread of the CUDA stage layout (synthetic numbers)."""

from __future__ import annotations

from typing import Any

from benchmarks.latency import bound_by


def dist(mean: float, n: int = 100) -> dict[str, Any]:
    return {"mean": mean, "n": n}


NETS = {"detector": {"median_ms": 1.0}, "generator": {"median_ms": 2.0}}


def test_one_restore_thread_counts_detection_inside_it() -> None:
    stages = {"capture": dist(2.0), "restore": dist(20.0), "render": dist(0.1)}
    steps = {
        "detect": dist(6.0),
        "align": dist(1.0),
        "mask": dist(5.0),
        "restore": dist(6.0),
        "composite": dist(1.0),
    }
    out = bound_by(stages, steps, NETS, dist(2.0), 50.0)
    assert out["slowest_stage"] == "restore" and out["overlap_ms"] is None
    assert (
        out["restore_breakdown_ms"]["glue"] == 1.0 + 1.0 + 1.0
    )  # align + composite + 1 ms outside the steps
    assert "faces thread" not in out["analysis"]


def test_faces_thread_is_analysed_and_its_overlap_reported() -> None:
    # faces 8 ms + restore 14 ms per frame at 80 fps (12.5 ms period): at least 9.5 ms ran concurrently.
    stages = {"capture": dist(2.0), "faces": dist(8.0), "restore": dist(14.0), "render": dist(0.1)}
    steps = {
        "upload": dist(0.5),
        "detect": dist(6.0),
        "align": dist(1.0),
        "mask": dist(5.0),
        "restore": dist(6.0),
        "composite": dist(1.0),
        "download": dist(0.5),
    }
    out = bound_by(stages, steps, NETS, dist(2.0), 80.0)
    assert out["stage_mean_ms"]["faces"] == 8.0
    assert abs(out["overlap_ms"] - 9.5) < 1e-9
    # detect and upload ran in the faces thread: not subtracted from the restore thread's own time.
    glue = out["restore_breakdown_ms"]["glue"]
    assert abs(glue - (1.0 + 1.0 + 0.5 + (14.0 - (1.0 + 5.0 + 6.0 + 1.0 + 0.5)))) < 1e-9
    assert (
        "faces thread (detection, upload and face mesh of the next frame) 8.0 ms/frame (9.5 ms/frame observed"
        in out["analysis"]
    )
    # The face mesh runs in the faces thread too, and counts towards the face prior.
    slower = {**stages, "restore": dist(16.0)}
    meshed = bound_by(slower, {**steps, "mesh": dist(3.0), "prior": dist(2.0)}, NETS, dist(2.0), 50.0)
    assert meshed["restore_breakdown_ms"]["face_prior"] == 5.0
    # The prior (2 ms) ran in the restore thread, the mesh (3 ms) did not: 16 - 15.5 ms outside the steps.
    assert abs(meshed["restore_breakdown_ms"]["glue"] - (1.0 + 1.0 + 0.5 + 0.5)) < 1e-9
    stalled = bound_by(stages, steps, NETS, dist(2.0), 40.0)  # 25 ms period: no overlap needed
    assert stalled["overlap_ms"] == 0.0
