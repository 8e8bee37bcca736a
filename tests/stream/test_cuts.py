"""Scene cuts end every track (stream.faces.cuts): a coasting face box never lands on the next shot."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.face_detect import FaceDetection
from stream.faces.cuts import SceneCutConfig, SceneCutDetector
from stream.faces.front_end import FaceFrontEnd
from tests.stream.test_restore import ScriptedDetector, face


def scene(seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    """A textured frame: smooth blobs, like a picture rather than noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 20, w // 20, 3)).astype(np.uint8)
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))


def shifted(frame: np.ndarray, dx: int) -> np.ndarray:
    return np.roll(frame, dx, axis=1)


def test_no_cut_on_motion_light_change_or_noise() -> None:
    cuts = SceneCutDetector()
    a = scene(0)
    rng = np.random.default_rng(1)
    assert not cuts.update(a)  # the first frame is never a cut
    for dx in range(1, 6):  # a slow pan: 1 px per frame
        assert not cuts.update(shifted(a, dx))
    darker = np.clip(a.astype(np.float32) * 0.6 + 30, 0, 255).astype(np.uint8)  # light / exposure
    assert not cuts.update(shifted(darker, 5))
    noisy = np.clip(shifted(darker, 5) + rng.normal(0, 6, a.shape), 0, 255).astype(np.uint8)
    assert not cuts.update(noisy)
    assert cuts.cuts == 0


def test_cut_between_shots_size_change_and_fade() -> None:
    cuts = SceneCutDetector()
    cuts.update(scene(0))
    assert cuts.update(scene(5))  # another picture
    assert not cuts.update(scene(5))
    assert cuts.update(scene(5, 120, 160))  # the frame size changed
    black = np.zeros((120, 160, 3), np.uint8)
    assert cuts.update(black)  # a hard cut to black
    assert not cuts.update(black)
    assert cuts.cuts == 3


def test_off_and_config_checks() -> None:
    off = SceneCutDetector(SceneCutConfig(min_correlation=0.0))
    off.update(scene(0))
    assert not off.update(scene(5))
    with pytest.raises(ValueError, match="min_correlation"):
        SceneCutConfig(min_correlation=1.5)
    with pytest.raises(ValueError, match="thumb_width"):
        SceneCutConfig(thumb_width=4)


def test_front_end_ends_tracks_on_a_cut() -> None:
    """Face A is seen on shot 1; on shot 2 the detector finds nothing. Without the cut the track would
    coast onto shot 2 for max_missed frames; with it the face is gone at once and a face found on the
    next shot starts a new track."""
    a: list[FaceDetection] = [face(100.0, 110.0, 90.0)]
    script = [a] * 5 + [[]] * 3 + [[face(220.0, 120.0, 80.0)]]
    front = FaceFrontEnd(ScriptedDetector(script), 128, 4, 1)
    shot1, shot2 = scene(0), scene(9)
    ids = [front.locate(shot1).track_ids for _ in range(5)]
    assert ids[-1] == (1,)
    assert front.locate(shot2).track_ids == ()  # cut: no coasting face on the new shot
    assert front.locate(shot2).track_ids == ()
    assert front.locate(shot2).track_ids == ()
    assert front.locate(shot2).track_ids == (2,)
    assert front.cuts.cuts == 1

    # The same script with cut detection off keeps coasting track 1 onto shot 2 (the old behaviour).
    coast = FaceFrontEnd(ScriptedDetector(script), 128, 4, 1, cut_config=SceneCutConfig(min_correlation=0))
    for _ in range(5):
        coast.locate(shot1)
    assert coast.locate(shot2).track_ids == (1,)
