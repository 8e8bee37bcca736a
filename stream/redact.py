"""One place that hides secrets in URLs before they reach a log line, an error, the stats JSON or a report.

Camera and relay URLs carry credentials (``rtsp://admin:hunter2@cam/stream``, ``srt://host?passphrase=..``,
``https://host/live.m3u8?token=..``). Every piece of text that may contain a URL goes through
:func:`redact` on its way out, so a log file or a bug report never holds a password. The user name is
kept (it helps to tell cameras apart); the password and secret-looking query values become ``***``.
"""

from __future__ import annotations

import logging
import re
from typing import Final

MASK: Final = "***"

# scheme://user:password@host -> scheme://user:***@host ; scheme://token@host -> scheme://***@host
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/@:\s?#]*)(?::[^/\s]*)?@")
_SECRET_KEYS = "password|passwd|pass|pwd|passphrase|secret|token|key|auth|sig|signature|access_token"
_QUERY = re.compile(rf"(?P<key>[?&;](?:{_SECRET_KEYS})=)[^&;#\s'\"]*", re.IGNORECASE)


def _userinfo(m: re.Match[str]) -> str:
    user, has_password = m.group("user"), ":" in m.group(0)[len(m.group("scheme")) :]
    if has_password:
        return f"{m.group('scheme')}{user}:{MASK}@"
    # A user part without a password is often the secret itself (an API token as user name).
    return f"{m.group('scheme')}{MASK}@"


def redact(text: str) -> str:
    """``text`` with every URL's password (and secret query values) replaced by ``***``.

    Works on any text, not only on a bare URL: error messages and log lines hold URLs mid-sentence.
    """
    if "://" not in text and "=" not in text:
        return text
    return _QUERY.sub(lambda m: m.group("key") + MASK, _USERINFO.sub(_userinfo, text))


def redact_any(value: object) -> object:
    """:func:`redact` applied to every string inside ``value`` (dicts, lists, tuples); for JSON reports."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_any(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_any(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A handler filter that redacts the formatted message (and exception text) of every record.

    The modules redact the URLs they log themselves; this filter is the second line, for messages
    from code that is not ours (e.g. FFmpeg's, relayed by PyAV) and for tracebacks at DEBUG level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
