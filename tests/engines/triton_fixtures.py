"""A Triton server on loopback for the triton tests: the repository of models/small written with
``--python-backend`` (the bundled server has only the Python backend), served by the ``tritonserver`` of
``.venv-triton``. Without tritonclient or that venv the tests skip, saying which is missing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engines.errors import BackendUnavailableError
from engines.triton_repo import RepoConfig, write_repository
from engines.triton_server import TritonInstall, TritonServer

MODELS = Path(__file__).resolve().parents[2] / "models" / "small"


def install_or_skip() -> TritonInstall:
    pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (the scale extra)")
    try:
        return TritonInstall.find()
    except BackendUnavailableError as exc:
        pytest.skip(f"no Triton server here: {exc}")


def python_repository(
    out: Path, models: Path = MODELS, *, max_batch: int = 8, roles: tuple[str, ...] = ()
) -> Path:
    """The Python-backend repository of ``models`` under ``out``; only ``roles`` when given."""
    write_repository(
        models, out, config=RepoConfig(max_batch=max_batch, python_backend=True, intra_threads=1)
    )
    for entry in out.iterdir():
        if roles and entry.name not in roles:
            shutil.rmtree(entry)
    return out


@contextmanager
def serving(repository: Path) -> Iterator[TritonServer]:
    """A started server on 127.0.0.1 and a free port (stopped, and its files removed, on exit)."""
    with TritonServer(repository, install=install_or_skip(), startup_timeout_s=90) as server:
        yield server
