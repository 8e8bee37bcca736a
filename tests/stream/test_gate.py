from __future__ import annotations

import pytest

from stream.restore.gate import GateConfig, OcclusionGate


def _run(gate: OcclusionGate, fractions: list[float], track: int = 1) -> list[bool]:
    return [gate.update(track, f) for f in fractions]


def test_a_bare_face_with_single_frame_false_alarms_is_never_restored() -> None:
    gate = OcclusionGate(GateConfig(on_fraction=0.05, off_fraction=0.02, frames_on=3, frames_off=5))
    flicker = [0.0, 0.3, 0.0, 0.0, 0.2, 0.25, 0.0, 0.4, 0.0] * 10
    assert not any(_run(gate, flicker))


def test_an_occluder_is_caught_after_frames_on_and_held_through_short_dropouts() -> None:
    gate = OcclusionGate(GateConfig(on_fraction=0.05, off_fraction=0.02, frames_on=3, frames_off=4))
    decisions = _run(gate, [0.0, 0.3, 0.3, 0.3, 0.3, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert decisions == [False, False, False, True, True, True, True, True, True, True, True, False, False]


def test_between_the_thresholds_keeps_the_current_state() -> None:
    gate = OcclusionGate(GateConfig(on_fraction=0.1, off_fraction=0.02, frames_on=1, frames_off=1))
    assert _run(gate, [0.05, 0.05, 0.2, 0.05, 0.05, 0.01]) == [False, False, True, True, True, False]


def test_tracks_are_independent_and_a_reused_id_starts_bare() -> None:
    gate = OcclusionGate(GateConfig(frames_on=1, frames_off=1))
    assert gate.update(1, 0.5) and not gate.update(2, 0.0)
    gate.retain([2])
    assert not gate.update(1, 0.03)  # below on_fraction: a new face is not occluded yet
    gate.update(2, 0.5)
    gate.reset()
    assert not gate.update(2, 0.03)


@pytest.mark.parametrize(
    "kwargs", [{"on_fraction": 0.01, "off_fraction": 0.02}, {"frames_on": 0}, {"frames_off": 0}]
)
def test_bad_config_names_the_rule(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need|must"):
        GateConfig(**kwargs)  # type: ignore[arg-type]


def test_fraction_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        OcclusionGate().update(1, 1.5)


def test_evidence_probability_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="evidence_probability"):
        GateConfig(evidence_probability=0.0)
    with pytest.raises(ValueError, match="evidence_probability"):
        GateConfig(evidence_probability=1.2)
    assert GateConfig().evidence_probability == 0.9


def test_a_face_that_arrives_covered_is_restored_from_its_first_frame() -> None:
    gate = OcclusionGate(GateConfig(on_fraction=0.04, frames_on=3, first_frame_factor=1.5))
    assert gate.update(1, 0.07)  # first frame of track 1, evidence >= 0.06: at once
    assert not gate.update(2, 0.05)  # first frame of track 2, between on and 1.5x on: the usual wait
    assert not gate.update(2, 0.05)
    assert gate.update(2, 0.05)
    assert gate.update(1, 0.01)  # once on, hysteresis as before (frames_off)
    off = OcclusionGate(GateConfig(first_frame_factor=0))
    assert not off.update(1, 0.5)
    with pytest.raises(ValueError, match="first_frame_factor"):
        GateConfig(first_frame_factor=0.5)
