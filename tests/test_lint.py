"""ruff (lint and format) and mypy over the repository, with pyproject.toml's settings, so that the
README's test command checks them too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The tools of the environment running the tests (the venv of scripts/setup.sh, pinned in
# requirements.lock), from the repository root so that pyproject.toml's [tool.*] sections apply.
CHECKS = {
    "ruff check": [sys.executable, "-m", "ruff", "check", "."],
    "ruff format": [sys.executable, "-m", "ruff", "format", "--check", "."],
    "mypy": [sys.executable, "-m", "mypy"],  # the files of [tool.mypy]
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_repository_is_clean(name: str) -> None:
    done = subprocess.run(CHECKS[name], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}{done.stderr}"
