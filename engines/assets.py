"""Where the files the product needs at run time live: the default models and the demo clip.

Two layouts, one lookup. In a source checkout (and an editable install) ``models/`` and ``assets/`` sit at
the repository root, beside ``engines/``. A built wheel installs the same folders as data files under
``<prefix>/share/deocclude/`` (pyproject ``[tool.setuptools.data-files]``), because they are not Python
packages and must not claim top-level import names such as ``models``.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

SHARE_SUBDIR = Path("share") / "deocclude"
# What marks a folder as a complete data root: the face detector every run needs.
_MARKER = Path("models") / "yunet"


def _candidates() -> list[Path]:
    roots = [Path(__file__).resolve().parent.parent]
    for prefix in (sysconfig.get_path("data"), sys.prefix, sysconfig.get_config_var("userbase")):
        if prefix:
            roots.append(Path(prefix) / SHARE_SUBDIR)
    return roots


def data_root() -> Path:
    """The folder holding ``models/`` and ``assets/``: the checkout's root, else the installed share folder.

    When neither holds the models this is the checkout's root, so that loading a model later fails with
    the usual one-line "model not found: <path>" instead of this import-time lookup raising.
    """
    candidates = _candidates()
    return next((root for root in candidates if (root / _MARKER).is_dir()), candidates[0])


def models_dir() -> Path:
    """``<data root>/models``: one sub-folder per model profile (``small``, ``full``) and ``yunet``."""
    return data_root() / "models"


def demo_clip() -> Path:
    """The bundled demo clip (a real face wearing a synthetic face-mask, with audio)."""
    return data_root() / "assets" / "demo.mp4"
