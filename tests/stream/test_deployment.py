"""What a deployment does to the command: real processes, real signals, secrets in URLs, a full disk.

Each test starts ``run_stream.py`` as its own process (tiny untrained models: real ONNX, fast), does
to it what systemd/Docker/a crash would, and checks the files with PyAV and the outputs as text.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from tests.stream.conftest import Clip, free_port, write_clip
from tests.stream.rtsp_server import RtspTestServer

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Pw"


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """20 s at 24 fps: with --realtime a run lasts long enough to be signalled mid-way."""
    return write_clip(tmp_path_factory.mktemp("deploy") / "long.mp4", width=96, height=64, frames=480, fps=24)


class Run:
    """``run_stream.py`` in a child process; stderr/stdout collected by threads (never a full pipe)."""

    def __init__(self, args: list[str], preexec_fn: Callable[[], None] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "run_stream.py"), *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec_fn,  # noqa: PLW1509 - only resource limits, set before exec
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _drain(pipe: object, into: list[str]) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            into.append(line)

    def wait_for(self, needle: str, timeout_s: float = 60.0) -> None:
        end = time.monotonic() + timeout_s
        while not any(needle in line for line in self.err):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"{needle!r} never appeared; stderr:\n{''.join(self.err)}")
            time.sleep(0.05)

    def finish(self, timeout_s: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        for t in self._threads:
            t.join(timeout=5)
        return code

    @property
    def text(self) -> str:
        return "".join(self.out) + "".join(self.err)


def _decode(path: Path) -> tuple[int, tuple[int, int]]:
    """(frames, (width, height)) as a player sees them; raises if the file is unreadable."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        return n, (v.codec_context.width, v.codec_context.height)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_stops_cleanly_with_playable_file_stats_and_summary(
    sig: signal.Signals, long_clip: Clip, tiny_models: Path, tmp_path: Path
) -> None:
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
    run = Run(
        ["-i", str(long_clip.path), "-o", str(out), "--models", str(tiny_models), "--realtime", "-q"]
        + ["--stats-json", str(stats_path)]
    )
    run.wait_for("run: ")
    time.sleep(2.0)
    run.proc.send_signal(sig)
    code = run.finish(timeout_s=30)
    assert code == 128 + sig, run.text
    stats = json.loads(stats_path.read_text())
    assert stats["stopped_by"] == sig.name and stats["stopped"]
    assert 10 <= stats["frames_out"] < long_clip.frames  # stopped mid-way, not at the end
    frames, size = _decode(out)
    assert frames == stats["frames_out"] and size == (96, 64)  # every written frame is in the file
    done = [line for line in run.err if line.startswith("done: ")]
    assert len(done) == 1 and f"stopped_by {sig.name}" in done[0], run.text
    assert "Traceback" not in run.text


def test_sigkill_keeps_what_was_written(long_clip: Clip, tiny_models: Path, tmp_path: Path) -> None:
    """No handler runs on SIGKILL (or power loss): the fragmented MP4 keeps every finished fragment."""
    out = tmp_path / "killed.mp4"
    run = Run(["-i", str(long_clip.path), "-o", str(out), "--models", str(tiny_models), "--realtime", "-q"])
    run.wait_for("run: ")
    time.sleep(4.0)
    run.proc.kill()
    assert run.finish() == -signal.SIGKILL
    frames, size = _decode(out)
    assert frames >= 24 and size == (96, 64)  # at least the first second's fragments


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        # EFBIG instead of the default SIGXFSZ kill: what a full disk (ENOSPC) looks like to the writer.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk_is_one_error_line_and_the_file_stays_playable(tiny_models: Path, tmp_path: Path) -> None:
    noisy = tmp_path / "noisy.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(noisy), "w") as c:
        vs = c.add_stream("libx264", rate=24, options={"preset": "ultrafast", "crf": "10"})
        vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        for i in range(240):
            img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
            vf = av.VideoFrame.from_ndarray(img, format="bgr24")
            vf.pts = i
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    out = tmp_path / "full.mp4"
    limit = 1_500_000
    assert noisy.stat().st_size > 2 * limit  # the output cannot fit under the limit
    stats_path = tmp_path / "stats.json"
    run = Run(
        ["-i", str(noisy), "-o", str(out), "--models", str(tiny_models), "-q", "--log-level", "ERROR"]
        + ["--stats-json", str(stats_path)],
        preexec_fn=_limit_file_size(limit),
    )
    assert run.finish() == 1
    errors = [line for line in run.err if line.startswith("error: ")]
    assert len(errors) == 1 and "file size limit reached" in errors[0], run.text
    assert "Traceback" not in run.text
    frames, _ = _decode(out)  # strict decode: the half-written fragment was cut
    assert 0 < frames < 240
    stats = json.loads(stats_path.read_text())  # the failed run's stats are still written
    assert stats["stopped_by"] == "error" and "file size limit" in stats["error"]


def test_secrets_in_urls_never_reach_any_output(tiny_models: Path, tmp_path: Path) -> None:
    """A failing run and a working run, DEBUG logs and stats JSON included: the password is nowhere."""
    dead = f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/cam?token={SECRET}"
    failing = Run(
        ["-i", dead, "-o", str(tmp_path / "f.mp4"), "--models", str(tiny_models), "--log-level", "DEBUG"]
    )
    assert failing.finish() == 1
    assert "error: " in failing.text and "admin:***@127.0.0.1" in failing.text
    assert SECRET not in failing.text

    stats_path = tmp_path / "stats.json"
    with RtspTestServer() as server:
        url = server.url.replace("rtsp://", f"rtsp://admin:{SECRET}@")
        working = Run(
            ["-i", url, "-o", str(tmp_path / "w.mkv"), "--models", str(tiny_models), "--log-level", "DEBUG"]
            + ["--stats-json", str(stats_path)]
        )
        working.wait_for("run: ")
        time.sleep(2.0)
        working.proc.send_signal(signal.SIGTERM)
        assert working.finish(timeout_s=30) == 128 + signal.SIGTERM, working.text
    stats_text = stats_path.read_text()
    assert json.loads(stats_text)["frames_out"] > 0
    assert "admin:***@" in working.text and "admin:***@" in stats_text
    assert SECRET not in working.text and SECRET not in stats_text


def test_uncreatable_output_folder_is_one_line(clip: Clip, tiny_models: Path, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    for out in (tmp_path / "a_file" / "sub" / "o.mp4", Path("/proc/no_such_dir/o.mp4")):
        run = Run(
            ["-i", str(clip.path), "-o", str(out), "--models", str(tiny_models), "-q", "--log-level", "ERROR"]
        )
        assert run.finish() == 1
        errors = [line for line in run.err if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), run.text
        assert "cannot create the output folder" in errors[0]


def test_no_signal_handlers_outside_the_main_thread() -> None:
    from stream.shutdown import ShutdownSignals

    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def body() -> None:
        with ShutdownSignals(threading.Event()):
            seen.append(signal.getsignal(signal.SIGTERM))

    t = threading.Thread(target=body)
    t.start()
    t.join(5)
    assert seen == [before]


def test_sigterm_handler_sets_the_event_and_restores_the_default() -> None:
    from stream.shutdown import ShutdownSignals

    event = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    with ShutdownSignals(event) as s:
        os.kill(os.getpid(), signal.SIGTERM)
        assert event.wait(2) and s.stopped_by == "SIGTERM" and s.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) == before
