"""Headless Chromium driven through chromedriver's W3C WebDriver protocol over plain HTTP (no selenium).

Debian's ``chromium`` and ``chromium-driver`` packages; started as the machine's notes say a headless
Chromium runs here (no sandbox as root, no background networking on a closed network, a fresh profile).
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1340,480",
]


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One chromedriver process and one browser session; a context manager."""

    def __init__(self, chromium: str, driver: str) -> None:
        self.port = _free_port()
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        self._proc = subprocess.Popen(
            [driver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._call("GET", "/status")["value"].get("ready"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self._proc.kill()
                raise RuntimeError("chromedriver did not become ready in 20 s")
            time.sleep(0.1)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [*CHROMIUM_ARGS, f"--user-data-dir={self._profile.name}"],
                    },
                }
            }
        }
        self.session = self._call("POST", "/session", caps)["value"]["sessionId"]

    def _call(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            out: dict[str, Any] = json.loads(resp.read() or b"{}")
        finally:
            conn.close()
        if resp.status != 200:
            raise RuntimeError(f"webdriver {method} {path}: {resp.status} {out.get('value')}")
        return out

    def _session(self, method: str, path: str, body: object = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)["value"]

    def get(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def run_js(self, script: str, *args: object) -> Any:
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode(self._session("GET", "/screenshot"))
        path.write_bytes(png)
        return png

    def close(self) -> None:
        try:
            self._session("DELETE", "")
        except (OSError, RuntimeError):
            pass
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
