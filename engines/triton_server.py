"""A Triton Inference Server on loopback for tests and benchmarks: the ``tritonserver`` that the
``nvidia-pytriton`` wheel bundles, from its own virtual environment (``.venv-triton``, made by
scripts/setup.sh from requirements-triton.lock: pytriton pins numpy < 2, ours is 2).

That server has only the Python backend, so it serves repositories written with
``python -m engines.triton_repo --python-backend``. pytriton's own ``Triton.bind`` API is not used (on
Python 3.11.7 its model stub fails on ``RLock._recursion_count``, pytriton issue #51); the server is
started the classic way::

    tritonserver --model-repository=REPO --backend-directory=DIR --http-address=127.0.0.1 --http-port=PORT
                 --allow-grpc=false --allow-metrics=false

where ``DIR/python/`` holds symbolic links to the wheel's ``libtriton_python.so``,
``triton_python_backend_utils.py`` and ``python_backend_stubs/<X.Y>/triton_python_backend_stub`` (links, not
copies: the stub finds its bundled libraries relative to its real path). The stub embeds the system's
libpython of that version in isolated mode; the model finds numpy and onnxruntime through
``$DEOCCLUDE_TRITON_PYTHONPATH`` (see :mod:`engines.triton_python_model`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from engines.errors import BackendUnavailableError, ServerError

VENV_ENV = "DEOCCLUDE_TRITON_VENV"
# Read by engines/triton_python_model.py inside the server (not imported here: importing that file
# extends sys.path, which only the server's interpreter should do).
PYTHONPATH_ENV = "DEOCCLUDE_TRITON_PYTHONPATH"
DEFAULT_VENV = Path(__file__).resolve().parent.parent / ".venv-triton"


@dataclass(frozen=True)
class TritonInstall:
    """The files of a ``nvidia-pytriton`` install that a server needs."""

    server: Path
    python_backend: Path
    stub: Path
    site_packages: Path

    @classmethod
    def find(cls, venv: str | Path | None = None) -> TritonInstall:
        """The install in ``venv`` (default ``$DEOCCLUDE_TRITON_VENV``, else ``.venv-triton`` of the checkout);
        BackendUnavailableError saying how to make it when it is not there."""
        root = Path(venv or os.environ.get(VENV_ENV) or DEFAULT_VENV)
        hint = "make it with bash scripts/setup.sh (it installs requirements-triton.lock into .venv-triton)"
        sites = sorted(root.glob("lib/python3.*/site-packages"))
        if not sites:
            raise BackendUnavailableError(f"no Triton virtual environment at {root}: {hint}")
        site = sites[-1]
        bundle = site / "pytriton" / "tritonserver"
        version = site.parent.name.removeprefix("python")  # "3.11"
        install = cls(
            server=bundle / "bin" / "tritonserver",
            python_backend=bundle / "backends" / "python",
            stub=bundle / "python_backend_stubs" / version / "triton_python_backend_stub",
            site_packages=site,
        )
        missing = [p for p in (install.server, install.python_backend, install.stub) if not p.exists()]
        if missing:
            raise BackendUnavailableError(
                f"{root} has no nvidia-pytriton server files ({missing[0]}): {hint}"
            )
        if ctypes.util.find_library(f"python{version}") is None:
            raise BackendUnavailableError(
                f"the Triton Python backend stub needs the system's libpython{version}.so "
                f"(Debian/Ubuntu: apt-get install libpython{version})"
            )
        return install


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started it dies (Linux), so a killed test
    run leaves no server behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class TritonServer:
    """``with TritonServer(repo) as server: server.url`` -> ``"http://127.0.0.1:<port>"``, models ready.

    Starts ``tritonserver`` on ``host`` (loopback) and a free port unless ``port`` is given, and waits
    up to ``startup_timeout_s`` for ``/v2/health/ready`` (every model loaded). A server that exits or
    does not get ready in time is a :class:`ServerError` carrying the last lines of its log.
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        install: TritonInstall | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout_s: float = 60.0,
        log_path: str | Path | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise FileNotFoundError(f"model repository not found: {self.repository}")
        self.install = install or TritonInstall.find()
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout_s = startup_timeout_s
        self._tmp = tempfile.TemporaryDirectory(prefix="deocclude-triton-")
        self.log_path = Path(log_path) if log_path else Path(self._tmp.name) / "tritonserver.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _backends(self) -> Path:
        python = Path(self._tmp.name) / "backends" / "python"
        python.mkdir(parents=True, exist_ok=True)
        for source in (
            self.install.python_backend / "libtriton_python.so",
            self.install.python_backend / "triton_python_backend_utils.py",
            self.install.stub,
        ):
            (python / source.name).symlink_to(source)
        return python.parent

    def start(self) -> TritonServer:
        if self._process is not None:
            return self
        command = [
            str(self.install.server),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backends()}",
            f"--http-address={self.host}",
            f"--http-port={self.port}",
            "--allow-grpc=false",
            "--allow-metrics=false",
        ]
        env = {**os.environ, PYTHONPATH_ENV: str(self.install.site_packages)}
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                why = f"tritonserver exited with {self._process.returncode} while starting: {self.log_tail()}"
                self.stop()
                raise ServerError(why)
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1.0) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or models still loading (400)
            time.sleep(0.2)
        why = f"tritonserver was not ready within {self.startup_timeout_s:.0f} s: {self.log_tail()}"
        self.stop()
        raise ServerError(why)

    def log_tail(self, lines: int = 3) -> str:
        """The server's error lines (the last ``lines`` of them, else of the log), joined with " | "."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        rows = [r.strip() for r in text.splitlines() if r.strip() and not r.startswith(("+", "|"))]
        # "E...": Triton's error lines; the CUDA helper's complains on every CPU-only machine.
        errors = [r for r in rows if r.startswith(("E", "error:")) and "CudaDriverHelper" not in r]
        kept = (errors or rows)[-lines:]
        return " | ".join(r if len(r) < 400 else r[:400] + "..." for r in kept) or "(empty log)"

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 15 s) and remove its temporary files."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._tmp.cleanup()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
