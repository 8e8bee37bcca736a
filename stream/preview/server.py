"""The preview's HTTP server (stdlib ``http.server``, one thread per client, in the background).

    GET  /              the page: restored and input video, live numbers, controls
    GET  /stream.mjpg   the restored video as MJPEG (multipart/x-mixed-replace): VLC, OBS, ffmpeg open it
    GET  /input.mjpg    the input as captured, the same way
    GET  /frame.jpg     the newest restored frame as one JPEG (``?kind=input`` for the input), its
                        publish number in the X-Frame-Seq header
    GET  /stats.json    fps, latency, drops, faces (and the tracked ones: id, box), the controls, the
                        preview's own latency
    POST /controls      JSON ``{"paused": bool, "overlay": bool, "only_track": int | null}`` (any of the
                        keys; ``only_track``: a face of the newest frame, null for all faces); answers
                        the new state, or 400 with one line saying what was wrong

MJPEG rather than WebRTC: it needs nothing beyond the standard library, every player opens it, and on
loopback it adds one JPEG encode (a few ms at 640x480) to the frame's way (measured:
``benchmarks/results/preview_latency.json``). It binds to 127.0.0.1 unless told another host.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final
from urllib.parse import parse_qs, urlsplit

from stream.errors import SinkError
from stream.preview.hub import INPUT, KINDS, OUTPUT, PreviewHub
from stream.preview.page import PAGE_HTML

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
BOUNDARY: Final = "frame"
_WAIT_S: Final = 0.5  # a streaming client re-checks that the run is still going this often
_MAX_BODY: Final = 4096


def parse_bind(text: str) -> tuple[str, int]:
    """``"PORT"``, ``"HOST:PORT"`` or ``"[IPv6]:PORT"`` -> (host, port); the host defaults to 127.0.0.1.
    Port 0 picks a free port (the log line and :attr:`PreviewServer.url` say which)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = DEFAULT_HOST, text
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(
            f"preview address must be [HOST:]PORT (e.g. 8080 or 0.0.0.0:8080), got {text!r}"
        ) from None
    if not 0 <= port <= 65535:
        raise ValueError(f"preview port must be in 0..65535, got {port}")
    return host, port


def _handler(hub: PreviewHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "deocclude-preview"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            log.debug("preview %s: " + format, self.client_address[0], *args)

        def do_GET(self) -> None:  # noqa: N802 - http.server's spelling
            url = urlsplit(self.path)
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE_HTML.encode())
            elif url.path == "/stream.mjpg":
                self._stream(OUTPUT)
            elif url.path == "/input.mjpg":
                self._stream(INPUT)
            elif url.path == "/frame.jpg":
                kind = parse_qs(url.query).get("kind", [OUTPUT])[0]
                if kind not in KINDS:
                    self._send(HTTPStatus.BAD_REQUEST, "text/plain", f"kind must be one of {KINDS}".encode())
                    return
                jpeg = hub.wait_jpeg(kind, 0, timeout_s=5.0)
                if jpeg is None:
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"no frame yet")
                else:
                    self._send(HTTPStatus.OK, "image/jpeg", jpeg.data, {"X-Frame-Seq": str(jpeg.seq)})
            elif url.path == "/stats.json":
                self._send(HTTPStatus.OK, "application/json", json.dumps(hub.stats()).encode())
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found")

        def do_POST(self) -> None:  # noqa: N802
            if urlsplit(self.path).path != "/controls":
                self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= _MAX_BODY:
                self._send(HTTPStatus.BAD_REQUEST, "text/plain", b"a JSON body of at most 4096 bytes")
                return
            try:
                changes = json.loads(self.rfile.read(length))
                if not isinstance(changes, dict):
                    raise ValueError(f"expected a JSON object, got {type(changes).__name__}")
                state = hub.update_controls(changes)
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                self._send(HTTPStatus.BAD_REQUEST, "text/plain", str(e).encode())
                return
            face = "all" if state.only_track is None else f"#{state.only_track}"
            log.info("preview: controls now paused=%s overlay=%s faces=%s", state.paused, state.overlay, face)
            body = {"paused": state.paused, "overlay": state.overlay, "only_track": state.only_track}
            self._send(HTTPStatus.OK, "application/json", json.dumps(body).encode())

        def _send(
            self, status: HTTPStatus, ctype: str, body: bytes, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _stream(self, kind: str) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            seq = 0
            try:
                while not hub.closed:
                    jpeg = hub.wait_jpeg(kind, seq, timeout_s=_WAIT_S)
                    if jpeg is None:
                        continue
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg.data)}\r\n\r\n"
                    self.wfile.write(head.encode() + jpeg.data + b"\r\n")
                    self.wfile.flush()
                    hub.served(jpeg, kind)
                    seq = jpeg.seq
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                log.debug("preview: %s client %s left", kind, self.client_address[0])

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client still streaming must not keep the process alive
    allow_reuse_address = True


class PreviewServer:
    """Serves ``hub`` on ``host:port`` from a background thread until :meth:`close`.

    Opening binds at once: a port in use is a :class:`SinkError` naming it."""

    def __init__(self, hub: PreviewHub, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.hub = hub
        try:
            self._server = _Server((host, port), _handler(hub))
        except OSError as e:
            raise SinkError(f"preview: cannot listen on {host}:{port}: {e.strerror or e}") from e
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="preview-http", daemon=True
        )
        self._thread.start()
        scope = "loopback only" if host in ("127.0.0.1", "localhost", "::1") else "reachable from the network"
        log.info(
            "preview: %s (%s%s); plain MJPEG at %sstream.mjpg",
            self.url,
            scope,
            "; --preview 0.0.0.0:PORT to serve other machines" if scope == "loopback only" else "",
            self.url,
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """End every stream (the hub closes), stop serving and free the port. Idempotent."""
        self.hub.close()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5.0)
        self._server.server_close()

    def __enter__(self) -> PreviewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
