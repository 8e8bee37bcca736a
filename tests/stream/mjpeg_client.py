"""A plain HTTP client for the preview's endpoints (http.client only), as VLC or ffmpeg would read them."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np


@contextmanager
def mjpeg_frames(
    host: str, port: int, path: str = "/stream.mjpg", timeout_s: float = 10.0
) -> Iterator[Iterator[bytes]]:
    """Yields an iterator of the JPEG parts of a multipart/x-mixed-replace stream."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        ctype = resp.getheader("Content-Type") or ""
        assert resp.status == 200, resp.status
        assert ctype.startswith("multipart/x-mixed-replace"), ctype
        boundary = ctype.split("boundary=", 1)[1].strip()

        def parts() -> Iterator[bytes]:
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.strip() != f"--{boundary}".encode():
                    continue  # the CRLF after the previous part
                headers = {}
                while (h := resp.readline().strip()) != b"":
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                assert headers["content-type"] == "image/jpeg", headers
                yield resp.read(int(headers["content-length"]))

        yield parts()
    finally:
        conn.close()


def get(host: str, port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10.0)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def get_frame(host: str, port: int, kind: str = "output") -> tuple[int, bytes]:
    """(publish number, JPEG) of the newest frame of ``kind``."""
    conn = http.client.HTTPConnection(host, port, timeout=10.0)
    try:
        conn.request("GET", f"/frame.jpg?kind={kind}")
        resp = conn.getresponse()
        assert resp.status == 200, resp.status
        return int(resp.getheader("X-Frame-Seq") or 0), resp.read()
    finally:
        conn.close()


def get_json(host: str, port: int, path: str = "/stats.json") -> dict[str, object]:
    status, ctype, body = get(host, port, path)
    assert status == 200 and ctype == "application/json", (status, ctype)
    data = json.loads(body)
    assert isinstance(data, dict)
    return data


def post_json(host: str, port: int, path: str, payload: object) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10.0)
    try:
        body = json.dumps(payload).encode()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def decode(jpeg: bytes) -> np.ndarray:
    """(H, W, 3) uint8 BGR."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a JPEG"
    return img
