"""The preview's "pick the face" through FrameProcessor with the tiny ONNX test networks, on both op sets:
two occluded faces, the picked track restored, the other passed through bit-identical; a picked track
that ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytest

from stream.faces.tracker import TrackerConfig
from stream.preview.controls import ControlState, LiveControls
from stream.restore.config import TIMING_KEYS, FrameReport, TrackedFace
from stream.restore.processor import FrameProcessor
from tests.stream import test_restore as tr

pytest.importorskip("onnxruntime")

# The test networks and both op sets, as test_restore.py makes them.
engines = tr.engines
fresh = tr.fresh
make_ops = tr.make_ops
frame = tr.frame  # face A wears a green face mask, face B is bare

FACE_A, FACE_B = tr.FACE_A, tr.FACE_B  # A: centre x 90, size 100; B: centre x 235, size 80
GREEN_B = (212, 136, 259, 158)  # x0, y0, x1, y1 over face B's mouth and chin
SPLIT_X = 168  # every pixel restoring A may change lies left of it, B's right of it


@dataclass
class Pick:
    """A TrackChoice the test sets between frames (the preview's LiveControls is the real one)."""

    only_track: int | None = None


@pytest.fixture(scope="module")
def two_masked() -> np.ndarray:
    """test_restore's frame (A wears a green face mask) with a green face mask on B too."""
    rng = np.random.default_rng(0)
    grey = rng.integers(60, 200, (tr.H, tr.W, 1))
    bgr = np.clip(grey + rng.integers(-10, 11, (tr.H, tr.W, 3)), 0, 255).astype(np.uint8)
    for x0, y0, x1, y1 in (tr.GREEN_RECT, GREEN_B):
        bgr[y0:y1, x0:x1] = (40, 200, 40)
    return bgr


def _processor(script, fresh, make_ops, pick: Pick, **config) -> FrameProcessor:
    proc = tr.processor(script, fresh, make_ops, **config)
    proc.choice = pick
    return proc


def _ids(report: FrameReport) -> dict[str, int]:
    """Track id of face A and B by where their boxes are."""
    return {("A" if t.box_xywh[0] < SPLIT_X else "B"): t.track_id for t in report.tracked}


def test_only_the_picked_track_is_restored_and_the_other_face_is_bit_identical(
    two_masked, fresh, make_ops
) -> None:
    frame = two_masked
    det, gen = fresh
    pick = Pick()
    proc = _processor(tr.ScriptedDetector.same(tr.face(*FACE_A), tr.face(*FACE_B)), fresh, make_ops, pick)

    out_all, report = proc.process(frame)
    assert (report.faces, report.masked_faces, report.unpicked_faces, report.only_track) == (2, 2, 0, None)
    changed = np.any(out_all != frame, axis=2)
    assert changed[:, :SPLIT_X].any() and changed[:, SPLIT_X:].any(), "all faces: both are restored"
    ids = _ids(report)
    assert set(ids) == {"A", "B"} and all(t.restored for t in report.tracked)
    box_a = next(t.box_xywh for t in report.tracked if t.track_id == ids["A"])
    assert box_a == pytest.approx((40.0, 60.0, 100.0, 100.0), abs=1.0), "boxes are in frame pixels"

    for picked, kept, restored_side, passed_side in (
        ("B", "A", np.s_[:, SPLIT_X:], np.s_[:, :SPLIT_X]),
        ("A", "B", np.s_[:, :SPLIT_X], np.s_[:, SPLIT_X:]),
    ):
        det.batches.clear()
        gen.batches.clear()
        pick.only_track = ids[picked]
        out, report = proc.process(frame)
        assert np.array_equal(out[passed_side], frame[passed_side]), f"face {kept} must pass untouched"
        assert np.any(out[restored_side] != frame[restored_side]), f"the picked face {picked} is restored"
        assert (report.faces, report.masked_faces, report.unpicked_faces) == (2, 1, 1)
        assert report.only_track == ids[picked] and not report.only_track_lost
        assert {t.track_id: t.restored for t in report.tracked} == {ids[picked]: True, ids[kept]: False}
        assert det.batches == [2], "masks are still made for every face (current history for 'all')"
        assert gen.batches == [1], "the generator runs on the picked face only"
        assert set(TIMING_KEYS) <= set(report.timings_ms)

    pick.only_track = None
    out, report = proc.process(frame)
    assert report.masked_faces == 2, "back to all faces: both restored on the very next frame"


def test_a_picked_face_that_is_not_occluded_leaves_the_frame_itself(frame, fresh, make_ops) -> None:
    """test_restore's frame: A is occluded, B is bare. Picking B restores nothing, not even A."""
    pick = Pick()
    proc = _processor(tr.ScriptedDetector.same(tr.face(*FACE_A), tr.face(*FACE_B)), fresh, make_ops, pick)
    _, report = proc.process(frame)
    assert report.masked_faces == 1
    pick.only_track = _ids(report)["B"]
    out, report = proc.process(frame)
    assert out is frame and report.masked_faces == 0 and report.unpicked_faces == 1
    assert fresh[1].batches == [1], "only the first frame (all faces) ran the generator"


def test_a_lost_pick_restores_no_face_until_the_user_picks_again(two_masked, fresh, make_ops, caplog) -> None:
    frame = two_masked
    both = [tr.face(*FACE_A), tr.face(*FACE_B)]
    script = [both] * 4 + [[tr.face(*FACE_B)]] * 20  # A leaves the picture after 4 frames
    pick = Pick()
    proc = _processor(
        tr.ScriptedDetector(script), fresh, make_ops, pick, tracker=TrackerConfig(max_missed_s=0.1)
    )
    _, report = proc.process(frame)
    pick.only_track = _ids(report)["A"]
    with caplog.at_level(logging.INFO, logger="stream.restore.processor"):
        reports = [proc.process(frame) for _ in range(12)]
    lost = [r for _, r in reports if r.only_track_lost]
    assert lost, "A's track ended within 12 frames (3 missed frames allowed)"
    for out, r in reports:
        if r.only_track_lost:
            assert out is frame and r.masked_faces == 0, "B is occluded but was not picked"
            assert r.faces == 1 and r.unpicked_faces == 1 and r.only_track == pick.only_track
    lines = [rec.getMessage() for rec in caplog.records if "lost" in rec.getMessage()]
    assert lines == [
        f"the picked face #{pick.only_track} is lost (its track ended): no face is restored "
        "until another face or all faces are picked"
    ], "one line per lost pick"
    pick.only_track = None
    out, r = proc.process(frame)
    assert r.masked_faces == 1 and not r.only_track_lost and out is not frame, "all faces again, at once"


def test_the_pick_control_accepts_track_ids_and_null_only() -> None:
    c = LiveControls()
    assert c.only_track is None
    assert c.update({"only_track": 3}) == ControlState(only_track=3)
    assert c.update({"paused": True}).only_track == 3, "other controls keep the pick"
    for bad in (True, "3", 2.5, 0, -1, [3]):
        with pytest.raises(ValueError, match="only_track must be a track id"):
            c.update({"only_track": bad})
    assert c.update({"only_track": None}) == ControlState(paused=True)


def test_frame_reports_refuse_pick_counts_that_cannot_be() -> None:
    timings = dict.fromkeys(TIMING_KEYS, 0.0)
    with pytest.raises(ValueError, match="unpicked_faces"):
        FrameReport(
            faces=2, skipped_faces=0, masked_faces=1, timings_ms=timings, unpicked_faces=2, only_track=1
        )
    with pytest.raises(ValueError, match="need a picked track"):
        FrameReport(faces=1, skipped_faces=0, masked_faces=0, timings_ms=timings, only_track_lost=True)
    with pytest.raises(ValueError, match="tracked must list"):
        FrameReport(
            faces=2,
            skipped_faces=0,
            masked_faces=0,
            timings_ms=timings,
            tracked=(TrackedFace(1, (0.0, 0.0, 9.0, 9.0), False),),
        )
