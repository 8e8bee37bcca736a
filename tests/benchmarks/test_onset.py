"""benchmarks.onset: the face square it scores bare-after-removal frames on (bare_faces.face_region), and its argument checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.bare_faces import face_region
from benchmarks.eval_compose import FACE_CROP
from benchmarks.onset import main


def test_face_square_is_the_crop_mapped_back_into_the_frame() -> None:
    # frame -> crop: scale 0.5 and shift, so the crop's square covers 2x its size in the frame.
    matrix = np.array([[0.5, 0.0, -20.0], [0.0, 0.5, -10.0]])
    sq = face_region(matrix, (600, 700))
    ys, xs = np.nonzero(sq)
    # Nearest-neighbour edges may take one pixel more on either side.
    assert abs(int(xs.min()) - 40) <= 1 and abs(int(ys.min()) - 20) <= 1
    assert abs(int(xs.max()) - (40 + 2 * FACE_CROP)) <= 1 and abs(int(ys.max()) - (20 + 2 * FACE_CROP)) <= 1
    assert not sq[:, :38].any() and not sq[:18].any()


def test_missing_clips_folder_is_one_error_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["--clips", str(tmp_path / "none"), "--json", str(tmp_path / "o.json")]) == 1
    assert not (tmp_path / "o.json").exists()
