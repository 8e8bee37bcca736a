"""--compare: input and output in one frame, unit by unit and through the real pipeline into an H.264 file."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stream.app import DEMO_CLIP, StreamConfig, open_run
from stream.cli import main
from stream.media.compare import SIDE_BY_SIDE, SPLIT, compare_info, compose_bgr_u8, compose_frame
from stream.media.sinks import FileSink
from stream.media.sources import FileSource
from stream.pipeline import Pipeline
from stream.types import Frame, VideoInfo
from stream.view import ViewConfig, open_views

H, W = 48, 64


def _pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    inp = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = inp.copy()
    out[20:40, 10:60] = 7
    return inp, out


def test_side_by_side_is_twice_as_wide_with_input_left_and_output_right() -> None:
    inp, out = _pair()
    pic = compose_bgr_u8(inp, out, SIDE_BY_SIDE, labels=False)
    assert pic.shape == (H, 2 * W, 3) and pic.dtype == np.uint8
    assert np.array_equal(pic[:, :W], inp) and np.array_equal(pic[:, W:], out)
    labelled = compose_bgr_u8(inp, out, SIDE_BY_SIDE)
    assert np.array_equal(labelled[H // 2 :], pic[H // 2 :])  # labels stay in the top corners
    assert not np.array_equal(labelled[:8, :8], pic[:8, :8])


def test_split_keeps_the_size_left_half_input_right_half_output() -> None:
    inp, out = _pair()
    pic = compose_bgr_u8(inp, out, SPLIT, labels=False)
    half = W // 2
    assert pic.shape == inp.shape
    assert np.array_equal(pic[:, : half - 1], inp[:, : half - 1])
    assert np.array_equal(pic[:, half + 1 :], out[:, half + 1 :])
    assert (pic[:, half - 1 : half + 1] == (0, 255, 255)).all()


def test_bad_mode_and_mismatched_frames_are_errors() -> None:
    inp, out = _pair()
    with pytest.raises(ValueError, match="side-by-side, split"):
        compose_bgr_u8(inp, out, "overlay")
    with pytest.raises(ValueError, match="same"):
        compose_bgr_u8(inp, out[:, :10], SPLIT)
    info = VideoInfo(W, H, 25.0, time_base=Fraction(1, 25))
    assert compare_info(info, SIDE_BY_SIDE).width == 2 * W and compare_info(info, SPLIT) == info
    with pytest.raises(ValueError, match="compare mode"):
        ViewConfig(compare="both")


def test_reference_is_composed_like_the_picture() -> None:
    inp, out = _pair()
    frame = Frame(0, 0, Fraction(1, 25), out, 0.0, reference_bgr_u8=inp.copy())
    composed = compose_frame(frame, inp, SIDE_BY_SIDE)
    assert composed.reference_bgr_u8 is not None and composed.reference_bgr_u8.shape == composed.bgr_u8.shape
    # outside the restored block the picture equals its reference (the fidelity check's premise)
    same = np.all(composed.bgr_u8 == composed.reference_bgr_u8, axis=2)
    assert same[:, :W].all() and not same[20:40, W + 10 : W + 60].any()


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def test_cli_side_by_side_writes_input_left_restored_right(tmp_path: Path) -> None:
    out_path = tmp_path / "sbs.mp4"
    code = main(["--input", str(DEMO_CLIP), "--output", str(out_path), "--compare", SIDE_BY_SIDE, "--quiet"])
    assert code == 0
    written = _decode(out_path)
    with FileSource(DEMO_CLIP) as src:
        inputs = [f.bgr_u8 for f in src]
    assert len(written) == len(inputs)
    w = inputs[0].shape[1]
    pic, inp = written[len(inputs) // 2], inputs[len(inputs) // 2]
    assert pic.shape == (inp.shape[0], 2 * w, 3)
    left, right = pic[40:, :w], pic[40:, w:]
    assert _psnr(left, inp[40:]) > 30  # the input as decoded, through one more H.264 pass
    assert _psnr(right, inp[40:]) < _psnr(left, inp[40:]) - 3  # the restored face differs
    with av.open(str(out_path)) as c:
        assert c.streams.audio, "the input's audio is kept"


@pytest.mark.parametrize("mode", [SPLIT])
def test_real_pipeline_writes_the_comparison(tmp_path: Path, mode: str) -> None:
    out_path = tmp_path / f"{mode}.mp4"
    with open_run(StreamConfig(input=str(DEMO_CLIP), max_faces=1, progress=False)) as opened:
        info = opened.source.info
        views = open_views(ViewConfig(compare=mode), opened.stages, info)
        sink = FileSink(out_path, views.sink_info)
        stats = Pipeline(opened.source, views.stages, sink).run()
    assert stats.frames_out == info.frame_count
    written = _decode(out_path)
    with FileSource(DEMO_CLIP) as src:
        inputs = [f.bgr_u8 for f in src]
    assert len(written) == len(inputs)
    w = info.width
    k = len(inputs) // 2
    pic, inp = written[k], inputs[k]
    if mode == SIDE_BY_SIDE:
        assert pic.shape == (info.height, 2 * w, 3)
        left, right = pic[40:, :w], pic[40:, w:]
        assert _psnr(left, inp[40:]) > 30  # the input as decoded, through one more H.264 pass
        assert _psnr(right, inp[40:]) < _psnr(left, inp[40:]) - 3  # the restored face differs
    else:
        assert pic.shape == inp.shape
        assert _psnr(pic[40:, : w // 2 - 2], inp[40:, : w // 2 - 2]) > 30
