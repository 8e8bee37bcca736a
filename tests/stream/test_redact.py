"""URL redaction: passwords and secret query values never leave the process."""

from __future__ import annotations

import logging

import pytest

from stream.redact import RedactingFilter, redact, redact_any


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("rtsp://admin:hunter2@cam.local:554/live", "rtsp://admin:***@cam.local:554/live"),
        ("error: rtsp://u:p@h/x: cannot open stream", "error: rtsp://u:***@h/x: cannot open stream"),
        ("rtmp://APIKEYONLY@live.example/app", "rtmp://***@live.example/app"),
        ("srt://h:9000?passphrase=longsecret1&latency=200", "srt://h:9000?passphrase=***&latency=200"),
        ("https://h/live.m3u8?token=abc&x=1", "https://h/live.m3u8?token=***&x=1"),
        ("rtsp://cam.local/live", "rtsp://cam.local/live"),
        ("udp://127.0.0.1:5000?pkt_size=1316", "udp://127.0.0.1:5000?pkt_size=1316"),
        ("a=1 and rtsp://a:b@c/d then rtsp://e:f@g/h", "a=1 and rtsp://a:***@c/d then rtsp://e:***@g/h"),
        ("rtsp://u:p%40ss@h/x", "rtsp://u:***@h/x"),
        ("rtsp://u:p@ss@h/x", "rtsp://u:***@h/x"),  # an unescaped @ in the password
    ],
)
def test_redact(text: str, want: str) -> None:
    assert redact(text) == want


def test_redact_any_walks_json() -> None:
    got = redact_any({"input": "rtsp://u:pw@h/x", "n": 3, "list": ["rtsp://u:pw@h/y", None]})
    assert got == {"input": "rtsp://u:***@h/x", "n": 3, "list": ["rtsp://u:***@h/y", None]}


def test_filter_redacts_messages_args_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.redact")
    caplog.handler.addFilter(RedactingFilter())
    try:
        raise OSError("rtsp://u:topsecret@h/x refused")
    except OSError:
        log.exception("open %s failed", "rtsp://u:topsecret@h/x")
    assert "topsecret" not in caplog.text and "rtsp://u:***@h/x" in caplog.text
