"""``python -m stream.batch``: a folder of clips restored on a local Ray (the real tasks, the real
pipeline with the bundled models), a worker killed midway, a rerun, a corrupt file, the local path
without Ray; and, without Ray, what marks a file finished and how bad input is reported."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from stream.app import DEMO_CLIP, StreamConfig
from stream.batch import cli as batch_cli
from stream.batch.plan import plan
from stream.batch.resume import InputStamp, finished, mark_done, output_options, sidecar_path
from stream.batch.runners import run_process_pool
from stream.batch.task import DONE, FAILED, FileOutcome, Job
from tests.stream.conftest import write_clip

ray_test = pytest.mark.ray


def batch(*argv: str | Path) -> int:
    return batch_cli.main([str(a) for a in argv])


def decoded(path: Path) -> tuple[list[np.ndarray], bool]:
    """Every frame of ``path`` (BGR) and whether it has audio: a file PyAV plays to the end."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(c.streams.video[0])]
        return frames, bool(c.streams.audio)


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def cut_demo(out: Path, frames: int) -> Path:
    """The first ``frames`` frames of the bundled demo clip (a masked face), video only, no re-encode."""
    with av.open(str(DEMO_CLIP)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        n = 0
        for packet in src.demux(vin):
            if packet.dts is None or n >= frames:
                continue
            n += 1
            packet.stream = vout
            dst.mux(packet)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three clips: one with audio, one plain, the demo's masked face (restored for real)."""
    folder = tmp_path_factory.mktemp("videos")
    write_clip(folder / "a.mp4", width=160, height=120, frames=30, fps=30, audio=True)
    write_clip(folder / "b.mp4", width=96, height=64, frames=20)
    cut_demo(folder / "c.mp4", 10)
    return folder


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module (it takes seconds to start), two CPUs as on the CI machine."""
    ray = pytest.importorskip("ray", reason="ray is not installed (the scale extra)")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_run(clips: Path, local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, dict]:
    """The folder restored once on the local Ray: (exit code, output folder, summary JSON)."""
    out = tmp_path_factory.mktemp("restored")
    summary = out.parent / f"{out.name}_summary.json"
    code = batch("--inputs", clips / "*.mp4", "--out", out, "--summary-json", summary)
    return code, out, json.loads(summary.read_text())


@ray_test
def test_ray_restores_a_folder_of_clips_frame_for_frame(clips: Path, ray_run: tuple[int, Path, dict]) -> None:
    code, out, summary = ray_run
    assert code == batch_cli.EXIT_OK
    assert summary["runner"].startswith("ray")
    assert [f["status"] for f in summary["files"]] == ["done"] * 3
    assert summary["totals"]["frames"] == 60
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        frames, has_audio = decoded(out / name)
        assert len(frames) == frame_count(clips / name)
        assert has_audio == (name == "a.mp4")
        assert sidecar_path(out / name).is_file()
    assert not [p for p in out.iterdir() if ".partial" in p.name]  # temporaries renamed or removed


@ray_test
def test_a_rerun_skips_finished_files(
    clips: Path, ray_run: tuple[int, Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = ray_run
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    capsys.readouterr()
    assert batch("--inputs", clips / "*.mp4", "--out", out) == batch_cli.EXIT_OK
    table = capsys.readouterr().out
    assert table.count("skipped (done)") == 4  # three rows and the totals line
    assert "0 done" in table and "nothing to run" in table
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == before


@ray_test
def test_a_killed_task_is_retried_and_its_output_is_complete(local_ray: None, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "long.mp4", width=160, height=120, frames=300, fps=30)
    out = tmp_path / "restored"
    killed: list[int] = []
    done = threading.Event()

    def kill_the_first_writer() -> None:
        # The worker's partial output names its pid: SIGKILL it while it writes (midway, no cleanup).
        while not done.is_set() and not killed:
            for partial in out.glob(".long.mp4.*.partial.mp4") if out.is_dir() else []:
                pid = int(partial.name.split(".")[3].split("-")[0])
                assert pid != os.getpid()  # a Ray worker, not this test
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.005)

    killer = threading.Thread(target=kill_the_first_writer)
    killer.start()
    summary = tmp_path / "summary.json"
    try:
        code = batch("--inputs", clip.path, "--out", out, "--retries", "1", "--summary-json", summary)
    finally:
        done.set()
        killer.join()
    assert killed, "the task finished before it could be killed"
    assert code == batch_cli.EXIT_OK
    (record,) = json.loads(summary.read_text())["files"]
    assert (record["status"], record["attempts"], record["frames"]) == ("done", 2, 300)
    assert frame_count(out / "long.mp4") == 300
    assert sorted(p.name for p in out.iterdir()) == ["long.mp4", "long.mp4.done.json"]


@ray_test
def test_a_corrupt_file_is_reported_and_the_others_succeed(
    local_ray: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    write_clip(folder / "good.mp4", frames=12)
    (folder / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    summary = tmp_path / "summary.json"
    code = batch("--inputs", folder / "*.mp4", "--out", tmp_path / "out", "--summary-json", summary)
    assert code == batch_cli.EXIT_ERROR
    files = {Path(f["input"]).name: f for f in json.loads(summary.read_text())["files"]}
    assert files["good.mp4"]["status"] == "done" and files["good.mp4"]["frames"] == 12
    bad = files["bad.mp4"]
    assert (bad["status"], bad["attempts"]) == ("failed", 2)  # tried again once (--retries 1)
    assert bad["error"].startswith("SourceError: ") and "\n" not in bad["error"]
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "out" / "bad.mp4").exists()


@ray_test
def test_the_local_path_without_ray_gives_the_same_outputs(
    clips: Path, ray_run: tuple[int, Path, dict], tmp_path: Path
) -> None:
    _, ray_out, _ = ray_run
    out = tmp_path / "local"
    summary = tmp_path / "summary.json"
    code = batch(
        "--inputs", clips / "*.mp4", "--out", out, "--no-ray", "--workers", "2", "--summary-json", summary
    )
    assert code == batch_cli.EXIT_OK
    assert json.loads(summary.read_text())["runner"].startswith("local process pool")
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        local, _ = decoded(out / name)
        remote, _ = decoded(ray_out / name)
        assert len(local) == len(remote)
        assert all(np.array_equal(x, y) for x, y in zip(local, remote, strict=True)), name


# Without Ray: what marks a file finished, the local pool, and bad input.


def test_finished_means_same_input_content_same_options_and_the_output_in_place(tmp_path: Path) -> None:
    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    src.write_bytes(b"input bytes")
    out.write_bytes(b"restored bytes")
    options = output_options(StreamConfig(input=str(src)))
    mark_done(out, input=src, stamp=InputStamp.of(src), options=options, frames=3, ran_with={})
    assert finished(out, input=src, options=options)["frames"] == 3
    os.utime(src, ns=(1, 1))  # touched (copied back), same content: still finished, by its hash
    assert finished(out, input=src, options=options) is not None
    assert json.loads(sidecar_path(out).read_text())["mtime_ns"] == 1  # and cheap to check next time
    assert finished(out, input=src, options=output_options(StreamConfig(input=str(src), crf=30))) is None
    # Options that do not change the output (threads, queue size) do not redo it.
    assert output_options(StreamConfig(input=str(src), intra_threads=3, queue_size=9)) == options
    src.write_bytes(b"input BYTES")  # same size, new content
    assert finished(out, input=src, options=options) is None
    src.write_bytes(b"input bytes")
    mark_done(out, input=src, stamp=InputStamp.of(src), options=options, frames=3, ran_with={})
    out.write_bytes(b"half")  # the output was replaced by something else
    assert finished(out, input=src, options=options) is None


def _exit_on_first_attempt(job: Job) -> FileOutcome:
    """A task whose process dies the first time (its marker file does not exist yet), then succeeds."""
    marker = job.output.with_suffix(".died")
    if not marker.exists():
        marker.touch()
        os._exit(3)
    return FileOutcome(str(job.input), str(job.output), DONE, frames=1, attempts=1)


def test_the_local_pool_reruns_a_file_whose_process_died(tmp_path: Path) -> None:
    config = StreamConfig(input=str(tmp_path / "in.mp4"))
    jobs = [
        Job(tmp_path / f"{n}.mp4", tmp_path / "out" / f"{n}.mp4", config, output_options(config))
        for n in ("one", "two")
    ]
    (tmp_path / "out").mkdir()
    outcomes = run_process_pool(jobs, _exit_on_first_attempt, lambda o: None, workers=2, crash_retries=1)
    assert [o.status for o in outcomes] == [DONE, DONE]  # each charged for its own death only
    for job in jobs:
        job.output.with_suffix(".died").unlink()
    (failed,) = run_process_pool(jobs[:1], _exit_on_first_attempt, lambda o: None, workers=1, crash_retries=0)
    assert failed.status == FAILED and failed.error.startswith("worker process died")


def test_outputs_keep_the_layout_and_clashes_are_errors(tmp_path: Path) -> None:
    for rel in ("a/x.mp4", "b/x.mp4", "b/x.avi", "b/y.mkv"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    p = plan([str(tmp_path / "**" / "*.*"), str(tmp_path / "nothing" / "*.mp4")], tmp_path / "out")
    outputs = sorted(str(o.relative_to(tmp_path / "out")) for _, o in p.pairs)
    assert outputs == ["a/x.mp4", "b/x.mp4", "b/y.mkv"]
    assert any("x.avi" in e and "rename one" in e for e in p.errors)
    assert any("matches no file" in e for e in p.errors)


def test_without_ray_it_says_so_once_and_runs_a_local_pool(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(batch_cli, "_ray_importable", lambda: False)
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("one.mp4", "two.mp4"):
        write_clip(folder / name, frames=8)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="stream.batch"):
        code = batch("--inputs", folder / "*.mp4", "--out", out, "--workers", "1")
    assert code == batch_cli.EXIT_OK
    assert [r.getMessage() for r in caplog.records if "ray is not installed" in r.getMessage()] == [
        "ray is not installed (pip install 'deocclude[scale]'): the files run locally in a pool of 1 worker "
        "process(es)"
    ]
    assert "local process pool (1 workers)" in capsys.readouterr().out
    assert [frame_count(out / n) for n in ("one.mp4", "two.mp4")] == [8, 8]
    assert batch("--inputs", folder / "*.mp4", "--out", out, "--ray") == batch_cli.EXIT_USAGE
    assert "ray is not installed" in capsys.readouterr().err


def test_bad_input_is_one_line_and_exits_non_zero_only_on_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        batch("--inputs", tmp_path / "*.mp4", "--out", tmp_path / "out", "--no-ray") == batch_cli.EXIT_ERROR
    )
    err = capsys.readouterr().err
    assert "matches no file" in err and "Traceback" not in err
    assert (
        batch("--inputs", tmp_path / "a.mp4", "--out", tmp_path, "--output", "x.mp4") == batch_cli.EXIT_USAGE
    )
    assert "use --out instead of --output" in capsys.readouterr().err
    assert batch("--inputs", tmp_path, "--out", tmp_path / "out", "--no-ray") == batch_cli.EXIT_ERROR
    assert "is a folder" in capsys.readouterr().err
