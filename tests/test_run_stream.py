"""The command line end to end: the bundled demo clip through the real pipeline, and bad input."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

import run_stream
from stream.app import DEMO_CLIP
from stream.networks import MODELS_DIR
from tests.stream.conftest import export_tiny_models

DEMO_FRAMES = 24


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first second of the bundled demo clip, audio included (stream copy, no re-encode)."""
    out = tmp_path_factory.mktemp("media") / "short_demo.mp4"
    with av.open(str(DEMO_CLIP)) as src, av.open(str(out), "w") as dst:
        vin, ain = src.streams.video[0], src.streams.audio[0]
        vout, aout = dst.add_stream_from_template(vin), dst.add_stream_from_template(ain)
        frames = 0
        for packet in src.demux(vin, ain):
            if packet.dts is None:
                continue
            if packet.stream is vin:
                if frames >= DEMO_FRAMES:
                    continue
                frames += 1
                packet.stream = vout
            else:
                if float(packet.pts * packet.time_base) > DEMO_FRAMES / 24:
                    continue
                packet.stream = aout
            dst.mux(packet)
    return out


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained tiny-profile networks exported by the training package (real ONNX, real interfaces)."""
    return export_tiny_models(tmp_path_factory.mktemp("tiny_models"))


def _video_info(path: Path) -> tuple[int, int, int, list[int], bool]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        pts = [f.pts for f in c.decode(v)]
        return v.codec_context.width, v.codec_context.height, len(pts), pts, bool(c.streams.audio)


def test_file_run_keeps_every_frame_size_timestamps_and_audio(
    short_demo: Path, tiny_models: Path, tmp_path: Path
) -> None:
    out = tmp_path / "restored.mp4"
    stats = tmp_path / "stats.json"
    code = run_stream.main(
        [
            "--input",
            str(short_demo),
            "--output",
            str(out),
            "--models",
            str(tiny_models),
            "-q",
            "--stats-json",
            str(stats),
        ]
    )
    assert code == run_stream.EXIT_OK
    w_in, h_in, n_in, pts_in, _ = _video_info(short_demo)
    w, h, n, pts, has_audio = _video_info(out)
    assert (w, h, n) == (w_in, h_in, n_in) == (640, 360, DEMO_FRAMES)
    assert pts == pts_in
    assert has_audio
    assert '"frames_out": 24' in stats.read_text()


@pytest.mark.parametrize(
    ("args", "needle", "code"),
    [
        (["--input", "/definitely/missing.mp4"], "no such file", run_stream.EXIT_ERROR),
        (["--input", __file__], "not a readable video", run_stream.EXIT_ERROR),
        (["--max-faces", "0"], "max_faces", run_stream.EXIT_USAGE),
        (["--crf", "60"], "crf must be in 0..51", run_stream.EXIT_USAGE),
        (["--reconnect-timeout", "-1"], "reconnect_timeout_s must be >= 0", run_stream.EXIT_USAGE),
        (["--models", "/definitely/missing"], "detector model not found", run_stream.EXIT_ERROR),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    args: list[str], needle: str, code: int, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run_stream.main([*args, "--output", str(tmp_path / "o.mp4"), "-q", "--log-level", "ERROR"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]
    assert "Traceback" not in "\n".join(err)


def test_default_models_find_and_restore_the_demo_mask(short_demo: Path, tmp_path: Path) -> None:
    """The shipped detector must find the face-mask of the demo clip, and the generator must change it."""
    from stream.app import StreamConfig, run

    assert (MODELS_DIR / "small" / "generator.onnx").is_file(), (
        "the default models/small must ship in the repo"
    )

    result = run(StreamConfig(input=str(short_demo), output=str(tmp_path / "o.mp4"), progress=False))
    restored = [r.masked_faces for r in result.reports]
    assert len(restored) == DEMO_FRAMES
    assert sum(1 for m in restored if m >= 1) >= DEMO_FRAMES * 0.9


def test_stats_report_psnr_outside_the_faces_and_crf_acts(
    short_demo: Path, tiny_models: Path, tmp_path: Path
) -> None:
    import json

    got = {}
    for crf in ("30", None):
        stats = tmp_path / f"s{crf}.json"
        args = ["-i", str(short_demo), "-o", str(tmp_path / f"o{crf}.mp4"), "--models", str(tiny_models)]
        args += ["-q", "--stats-json", str(stats)] + (["--crf", crf] if crf else [])
        assert run_stream.main(args) == run_stream.EXIT_OK
        s = json.loads(stats.read_text())
        assert s["stopped_by"] == "end of input"
        got[crf] = s["psnr_outside_faces_db"]
    assert got[None]["frames"] == 3 and got[None]["mean_db"] >= 40.0  # visually lossless by default
    assert got["30"]["mean_db"] < got[None]["mean_db"] - 5


def test_phone_clip_filmed_sideways_is_restored_upright(short_demo: Path, tmp_path: Path) -> None:
    """Rotation metadata is applied before detection: faces are found and the output is upright."""
    from stream.app import StreamConfig, run

    sideways = tmp_path / "phone.mp4"
    with av.open(str(short_demo)) as src, av.open(str(sideways), "w") as dst:
        vs = dst.add_stream("libx264", rate=24, options={"preset": "ultrafast", "crf": "12"})
        vs.width, vs.height, vs.pix_fmt = 360, 640, "yuv420p"
        vs.set_display_rotation(90)  # display: turn the stored picture 90 degrees counter-clockwise
        for i, f in enumerate(src.decode(video=0)):
            stored = np.ascontiguousarray(np.rot90(f.to_ndarray(format="bgr24"), -1))
            vf = av.VideoFrame.from_ndarray(stored, format="bgr24")
            vf.pts = i
            for p in vs.encode(vf):
                dst.mux(p)
        for p in vs.encode(None):
            dst.mux(p)
    out = tmp_path / "upright.mp4"
    result = run(StreamConfig(input=str(sideways), output=str(out), progress=False, keep_audio=False))
    w, h, n, _, _ = _video_info(out)
    assert (w, h, n) == (640, 360, DEMO_FRAMES)
    restored = [r.masked_faces for r in result.reports]
    assert sum(1 for m in restored if m >= 1) >= DEMO_FRAMES * 0.9


def test_file_to_stream_is_paced_to_real_time(
    short_demo: Path, tiny_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On by default for a stream output (the frame spacing itself is tested on FileSource)."""
    import json

    from tests.stream.conftest import free_port

    url = f"udp://127.0.0.1:{free_port()}"  # UDP needs no receiver: the sender's pace is what is measured
    walls, paced = {}, {}
    for extra in ([], ["--no-realtime"]):
        stats = tmp_path / f"s{len(extra)}.json"
        caplog.clear()
        args = [
            "-i",
            str(short_demo),
            "-o",
            url,
            "--models",
            str(tiny_models),
            "-q",
            "--stats-json",
            str(stats),
        ]
        with caplog.at_level("INFO", logger="stream.app"):
            assert run_stream.main(args + extra) == run_stream.EXIT_OK
        walls[bool(extra)] = json.loads(stats.read_text())["wall_s"]
        paced[bool(extra)] = any("paced to real time" in r.getMessage() for r in caplog.records)
    assert paced == {False: True, True: False}
    assert walls[False] >= (DEMO_FRAMES - 1) / 24 * 0.95  # never faster than the clip plays
