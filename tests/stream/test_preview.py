"""The live preview through a real HTTP client on loopback: MJPEG parts change, numbers update, controls act."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from stream.errors import SinkError
from stream.preview.controls import ControlState, LiveControls
from stream.preview.hub import PreviewHub, overlay_bgr_u8
from stream.preview.server import PreviewServer, parse_bind
from stream.restore.config import TrackedFace
from stream.stats import ProgressUpdate
from tests.stream.mjpeg_client import decode, get, get_json, mjpeg_frames, post_json

H, W = 120, 160


def synthetic_pair(i: int) -> tuple[np.ndarray, np.ndarray]:
    """An input with a bar moving right and an output that differs from it inside a square only."""
    inp = np.full((H, W, 3), 90, np.uint8)
    x = (i * 7) % (W - 10)
    inp[:, x : x + 10] = (250, 250, 250)
    out = inp.copy()
    out[40:80, 60:100] = (30, 160, 30)  # "the restored face"
    return inp, out


TRACKS = (TrackedFace(3, (60.0, 40.0, 40.0, 40.0), True), TrackedFace(5, (10.0, 20.0, 30.0, 30.0), False))


class Producer:
    """Publishes synthetic frames and progress at ~50 fps until stopped, as the pipeline would, with the
    faces ``tracks`` (settable) and ``lost_track``."""

    def __init__(self, hub: PreviewHub) -> None:
        self.hub, self.stop = hub, threading.Event()
        self.tracks: tuple[TrackedFace, ...] = TRACKS
        self.lost_track: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        t0 = time.perf_counter()
        while not self.stop.wait(0.02):
            i += 1
            inp, out = synthetic_pair(i)
            self.hub.publish(inp, out, 1, tracks=self.tracks, lost_track=self.lost_track)
            self.hub.on_progress(
                ProgressUpdate(i, i, i // 10, None, time.perf_counter() - t0, 33.0 + i % 5, True)
            )

    def __enter__(self) -> Producer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def served() -> Iterator[tuple[PreviewServer, Producer]]:
    hub = PreviewHub()
    with PreviewServer(hub, "127.0.0.1", 0) as server, Producer(hub) as producer:
        yield server, producer


def test_bind_parsing_defaults_to_loopback_and_names_what_it_wants() -> None:
    assert parse_bind("8080") == ("127.0.0.1", 8080)
    assert parse_bind("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_bind("[::1]:81") == ("::1", 81)
    with pytest.raises(ValueError, match=r"\[HOST:\]PORT"):
        parse_bind("localhost:http")
    with pytest.raises(ValueError, match="0..65535"):
        parse_bind("70000")


def test_controls_refuse_unknown_keys_and_non_bools() -> None:
    c = LiveControls()
    assert c.update({"paused": True}) == ControlState(paused=True, overlay=False)
    with pytest.raises(ValueError, match="unknown control"):
        c.update({"face": 2})
    with pytest.raises(ValueError, match="paused must be a bool"):
        c.update({"paused": "yes"})
    assert c.state == ControlState(paused=True)


def test_mjpeg_stream_delivers_changing_frames_and_stats_update(
    served: tuple[PreviewServer, Producer],
) -> None:
    server, _ = served
    host, port = server.host, server.port
    assert server.url == f"http://127.0.0.1:{port}/"
    with mjpeg_frames(host, port) as parts:
        frames = [decode(next(parts)) for _ in range(4)]
    assert all(f.shape == (H, W, 3) for f in frames)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).max() > 100  # the bar moved
    s1 = get_json(host, port)
    time.sleep(0.3)
    s2 = get_json(host, port)
    assert isinstance(s1["frames"], int) and isinstance(s2["frames"], int) and s2["frames"] > s1["frames"]
    assert s2["faces"] == 1 and s2["size"] == [W, H] and s2["fps"] > 10
    assert 33 <= s2["latency_ms_p50"] <= 38  # type: ignore[operator]
    assert server.hub.served_ms() and s2["preview_ms_p50"] is not None
    with mjpeg_frames(host, port, "/input.mjpg") as parts:
        inp = decode(next(parts))
    assert abs(int(inp[60, 80, 1]) - 160) > 40  # the input has no green square


def test_controls_over_http_toggle_the_overlay(served: tuple[PreviewServer, Producer]) -> None:
    server, _ = served
    host, port = server.host, server.port
    status, body = post_json(host, port, "/controls", {"overlay": True})
    assert status == 200 and b'"overlay": true' in body
    time.sleep(0.1)  # a frame published after the change
    _, ctype, jpeg = get(host, port, "/frame.jpg")
    assert ctype == "image/jpeg"
    img = decode(jpeg).astype(int)
    assert img[60, 80, 2] > img[60, 80, 1]  # the changed square is tinted red
    assert abs(img[10, 5, 0] - img[10, 5, 2]) < 20  # elsewhere grey as published
    assert get_json(host, port)["overlay"] is True
    assert post_json(host, port, "/controls", {"face": 1})[0] == 400
    assert post_json(host, port, "/controls", ["paused"])[0] == 400
    assert get(host, port, "/nothing")[0] == 404


def test_pick_the_face_over_http_lists_the_faces_and_validates_the_id(
    served: tuple[PreviewServer, Producer],
) -> None:
    server, producer = served
    host, port = server.host, server.port
    time.sleep(0.1)
    s = get_json(host, port)
    assert s["tracks"] == [
        {"id": 3, "box": [60, 40, 40, 40], "restored": True},
        {"id": 5, "box": [10, 20, 30, 30], "restored": False},
    ]
    assert s["only_track"] is None and s["only_track_lost"] is False
    status, body = post_json(host, port, "/controls", {"only_track": 5})
    assert status == 200 and b'"only_track": 5' in body
    assert server.hub.controls.only_track == 5  # what the restore thread reads on its next frame
    assert get_json(host, port)["only_track"] == 5
    for bad, says in (
        (7, b"no face #7 in the current frame; its faces are [3, 5]"),
        ("5", b"only_track must be a track id"),
        (True, b"only_track must be a track id"),
        (2.5, b"only_track must be a track id"),
    ):
        status, body = post_json(host, port, "/controls", {"only_track": bad})
        assert status == 400 and body.startswith(says) and b"\n" not in body, (bad, body)
    assert server.hub.controls.only_track == 5, "a refused pick changes nothing"
    # The picked track ends: the page is told, and the pick stays until the user changes it.
    producer.tracks, producer.lost_track = TRACKS[:1], 5
    time.sleep(0.1)
    s = get_json(host, port)
    assert s["only_track"] == 5 and s["only_track_lost"] is True and [t["id"] for t in s["tracks"]] == [3]
    assert post_json(host, port, "/controls", {"only_track": 5})[0] == 200, "re-posting the pick is fine"
    status, body = post_json(host, port, "/controls", {"only_track": None})
    assert status == 200 and b'"only_track": null' in body
    s = get_json(host, port)
    assert s["only_track"] is None and s["only_track_lost"] is False


def test_page_has_only_wired_controls(served: tuple[PreviewServer, Producer]) -> None:
    server, _ = served
    status, ctype, body = get(server.host, server.port, "/")
    page = body.decode()
    assert status == 200 and ctype.startswith("text/html")
    assert 'src="/stream.mjpg"' in page and 'src="/input.mjpg"' in page
    controls = re.findall(r'<(?:input|select) [^>]*id="([^"]+)"', page)
    assert page.count("<input ") + page.count("<select ") == len(controls) == 3
    assert set(controls) == set(LiveControls.FIELDS)  # every control on the page is one the run reads
    assert "<button" not in page


def test_streams_end_when_the_run_ends_and_the_port_is_freed() -> None:
    hub = PreviewHub()
    server = PreviewServer(hub, "127.0.0.1", 0)
    port = server.port
    hub.publish(*synthetic_pair(1), None)
    done = threading.Event()

    def read_all() -> None:
        with mjpeg_frames("127.0.0.1", port) as parts:
            for _ in parts:
                pass
        done.set()

    t = threading.Thread(target=read_all, daemon=True)
    t.start()
    time.sleep(0.3)
    server.close()
    assert done.wait(5), "the MJPEG stream did not end with the run"
    again = PreviewServer(PreviewHub(), "127.0.0.1", port)  # the port is free again
    with pytest.raises(SinkError, match=f"cannot listen on 127.0.0.1:{port}"):
        PreviewServer(PreviewHub(), "127.0.0.1", port)
    again.close()


def test_overlay_marks_exactly_the_changed_pixels() -> None:
    inp, out = synthetic_pair(3)
    marked = overlay_bgr_u8(inp, out)
    changed = np.any(inp != out, axis=2)
    assert np.array_equal(marked[:30], out[:30])  # far from the changed square: as published
    assert (marked[changed][:, 2] > out[changed][:, 2]).all()
    assert np.array_equal(overlay_bgr_u8(inp, inp), inp)


def test_ffmpeg_opens_stream_mjpg_as_is(served: tuple[PreviewServer, Producer]) -> None:
    """libavformat (what ffmpeg, VLC's avformat input and OBS's media source use), through PyAV."""
    import av

    server, _ = served
    with av.open(f"http://127.0.0.1:{server.port}/stream.mjpg", timeout=10) as container:
        assert container.format.name == "mpjpeg"
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == 3:
                break
    assert [f.shape for f in frames] == [(H, W, 3)] * 3
    assert np.abs(frames[0].astype(int) - frames[2].astype(int)).max() > 100  # the bar moved
