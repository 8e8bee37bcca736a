"""A tiny RTSP server on loopback that plays one synthetic H.264 stream, for tests and demos.

FFmpeg (and so PyAV) can receive a pushed stream in RTSP *listen* mode but cannot serve PLAY requests,
which is what IP cameras do and what :class:`stream.sources.UrlSource` speaks. This server covers that
role with the standard library plus PyAV's encoder: RTSP 1.0 over TCP, one H.264 track (RFC 6184,
single-NAL and FU-A packets) interleaved on the control connection (``rtsp_transport=tcp``), real-time
paced. Each PLAY session gets its own encoder, so every client starts on an IDR frame with in-band
SPS/PPS. ``stop()`` drops every client like a camera reboot; ``start()`` serves again on the same port.

It is not a general media server: no UDP transport, no authentication, no RTCP reports.
"""

from __future__ import annotations

import itertools
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np

log = logging.getLogger(__name__)

_RTP_CLOCK = 90_000
_MAX_PAYLOAD = 1400  # bytes per RTP packet: below a typical MTU, as a camera would send
_PAYLOAD_TYPE = 96


def pattern_bgr_u8(index: int, width: int, height: int) -> np.ndarray:
    """A moving test pattern: (H, W, 3) uint8 BGR whose mean brightness also encodes ``index``."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 4 + index * 3) % 256
    img[..., 1] = (y * 4) % 256
    img[..., 2] = (index * 8) % 256
    return img


def split_annexb(data: bytes) -> Iterator[bytes]:
    """Yield the NAL units of an Annex B byte stream (start codes removed)."""
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        nal = data[s:end].rstrip(b"\x00") if k + 1 < len(starts) else data[s:end]
        if nal:
            yield nal


def rtp_payloads(nal: bytes) -> Iterator[bytes]:
    """RFC 6184 payloads for one NAL unit: itself if it fits, else FU-A fragments."""
    if len(nal) <= _MAX_PAYLOAD:
        yield nal
        return
    indicator = (nal[0] & 0xE0) | 28
    body = nal[1:]
    chunk = _MAX_PAYLOAD - 2
    for off in range(0, len(body), chunk):
        start = 0x80 if off == 0 else 0
        end = 0x40 if off + chunk >= len(body) else 0
        yield bytes((indicator, start | end | (nal[0] & 0x1F))) + body[off : off + chunk]


class RtspTestServer:
    """Serve ``rtsp://127.0.0.1:<port>/<any path>`` playing a synthetic H.264 stream.

    ``frame_bgr_u8(index, width, height)`` draws each frame (default :func:`pattern_bgr_u8`).
    ``port=0`` picks a free port at the first ``start()`` and keeps it for later restarts.
    """

    def __init__(
        self,
        *,
        width: int = 160,
        height: int = 120,
        fps: float = 25.0,
        port: int = 0,
        frame_bgr_u8: Callable[[int, int, int], np.ndarray] = pattern_bgr_u8,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"test server size must be even for yuv420p, got {width}x{height}")
        self.width, self.height, self.fps, self.port = width, height, fps, port
        self._draw = frame_bgr_u8
        self._listener: socket.socket | None = None
        self._clients: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self.sessions_started = 0  # PLAY requests served since construction (reconnects count)

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/test"

    def start(self) -> RtspTestServer:
        if self._listener is not None:
            return self
        self._stop.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(4)
        sock.settimeout(0.2)  # the accept loop polls the stop flag
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._spawn(self._accept_loop, sock)
        log.debug("rtsp test server listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Close the listener and drop every client; returns once all server threads ended."""
        self._stop.set()
        self._flowing.set()
        with self._lock:
            listener, self._listener = self._listener, None
            clients = list(self._clients)
            self._clients.clear()
        for s in clients:
            _shutdown(s)
        if listener is not None:
            listener.close()
        for t in self._threads:
            t.join(timeout=5.0)
        self._threads = [t for t in self._threads if t.is_alive()]

    def pause(self) -> None:
        """Keep connections open but send nothing: a stalled camera (clients see a read timeout)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def __enter__(self) -> RtspTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name="rtsp-test-server")
        self._threads.append(t)
        t.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed by stop()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stop.is_set():
                    conn.close()
                    return
                self._clients.add(conn)
            self._spawn(self._serve_client, conn)

    def _serve_client(self, conn: socket.socket) -> None:
        send_lock = threading.Lock()
        playing = False
        session_id = f"{id(conn) & 0xFFFFFFF:08d}"
        reader = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                method, url, headers = request
                cseq = headers.get("cseq", "0")
                extra: dict[str, str] = {}
                body = b""
                if method == "OPTIONS":
                    extra["Public"] = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"
                elif method == "DESCRIBE":
                    body = self._sdp().encode()
                    extra["Content-Base"] = url.rstrip("/") + "/"
                    extra["Content-Type"] = "application/sdp"
                elif method == "SETUP":
                    if "TCP" not in headers.get("transport", ""):
                        _send(conn, send_lock, _response(cseq, 461, "Unsupported Transport"))
                        continue
                    extra["Transport"] = "RTP/AVP/TCP;unicast;interleaved=0-1"
                    extra["Session"] = f"{session_id};timeout=60"
                elif method == "PLAY":
                    extra["Session"] = session_id
                    extra["Range"] = "npt=0.000-"
                elif method == "TEARDOWN":
                    _send(conn, send_lock, _response(cseq, 200, "OK", {"Session": session_id}))
                    return
                elif method not in ("GET_PARAMETER", "SET_PARAMETER"):
                    _send(conn, send_lock, _response(cseq, 405, "Method Not Allowed"))
                    continue
                _send(conn, send_lock, _response(cseq, 200, "OK", extra, body))
                if method == "PLAY" and not playing:
                    playing = True
                    with self._lock:
                        self.sessions_started += 1
                    self._spawn(self._stream_to, conn, send_lock)
        except OSError:
            return
        finally:
            reader.close()
            with self._lock:
                self._clients.discard(conn)
            _shutdown(conn)

    def _sdp(self) -> str:
        return (
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=deocclude test stream\r\nc=IN IP4 0.0.0.0\r\n"
            "t=0 0\r\na=control:*\r\na=range:npt=0-\r\n"
            f"m=video 0 RTP/AVP {_PAYLOAD_TYPE}\r\na=rtpmap:{_PAYLOAD_TYPE} H264/{_RTP_CLOCK}\r\n"
            f"a=fmtp:{_PAYLOAD_TYPE} packetization-mode=1\r\n"
            f"a=framerate:{self.fps:g}\r\na=control:trackID=0\r\n"
        )

    def _stream_to(self, conn: socket.socket, send_lock: threading.Lock) -> None:
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height, enc.pix_fmt = self.width, self.height, "yuv420p"
        enc.time_base = Fraction(1, _RTP_CLOCK)
        enc.framerate = Fraction(self.fps).limit_denominator(1001)
        gop = max(1, round(self.fps))
        enc.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
        }
        seq = itertools.count()
        ssrc = 0x5EED0000 | (id(conn) & 0xFFFF)
        t0 = time.perf_counter()
        try:
            for index in itertools.count():
                due = t0 + index / self.fps
                # Waiting on the stop flag (not sleeping) lets stop() end the session promptly.
                if self._stop.wait(max(0.0, due - time.perf_counter())):
                    return
                while not self._flowing.wait(0.1):
                    if self._stop.is_set():
                        return
                    t0 += 0.1  # a stall shifts the schedule instead of bursting afterwards
                frame = av.VideoFrame.from_ndarray(self._draw(index, self.width, self.height), format="bgr24")
                ts = round(index * _RTP_CLOCK / self.fps)
                frame.pts = ts
                for packet in enc.encode(frame):
                    payloads = [p for nal in split_annexb(bytes(packet)) for p in rtp_payloads(nal)]
                    chunks = []
                    for k, payload in enumerate(payloads):
                        marker = 0x80 if k == len(payloads) - 1 else 0
                        header = struct.pack(
                            "!BBHII", 0x80, marker | _PAYLOAD_TYPE, next(seq) & 0xFFFF, ts & 0xFFFFFFFF, ssrc
                        )
                        rtp = header + payload
                        chunks.append(struct.pack("!cBH", b"$", 0, len(rtp)) + rtp)
                    _send(conn, send_lock, b"".join(chunks))
        except OSError:
            return  # client went away or stop() shut the socket


def _read_request(reader: BinaryIO) -> tuple[str, str, dict[str, str]] | None:
    """Read one RTSP request, skipping interleaved binary frames (RTCP receiver reports)."""
    read, readline = reader.read, reader.readline
    while True:
        first = read(1)
        if not first:
            return None
        if first == b"$":
            head = read(3)
            if len(head) < 3:
                return None
            read(struct.unpack("!BH", head)[1])
            continue
        line = (first + readline()).decode("latin-1").strip()
        if line:
            break
    method, url, *_ = line.split(" ")
    headers: dict[str, str] = {}
    length = 0
    while True:
        h = readline().decode("latin-1").strip()
        if not h:
            break
        key, _, value = h.partition(":")
        headers[key.strip().lower()] = value.strip()
        if key.strip().lower() == "content-length":
            length = int(value)
    if length:
        read(length)
    return method, url, headers


def _response(
    cseq: str, code: int, reason: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"RTSP/1.0 {code} {reason}", f"CSeq: {cseq}", "Server: deocclude-test"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _send(conn: socket.socket, lock: threading.Lock, data: bytes) -> None:
    with lock:
        conn.sendall(data)


def _shutdown(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
