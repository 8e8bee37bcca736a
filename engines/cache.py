"""Where built engines and timing caches live: one directory per GPU and TensorRT version.

Layout under the cache root (``cache_root()``)::

    engines/<gpu-name>-sm<cc>/trt-<tensorrt version>/
        timing.cache                                   # shared by every build on this GPU + TensorRT
        <name>-<sha256[:16]>-<precision>-b<min>_<opt>_<max>.engine
        <name>-<sha256[:16]>-<precision>-b<min>_<opt>_<max>.torchtrt-<version>.ep   (+ .json header)

The file name carries every field of the key, so two models, precisions or batch profiles never share
a file, and a new GPU or TensorRT version starts a fresh directory instead of tripping over old plans.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from engines.errors import EngineMismatchError, ModelLoadError
from engines.metadata import EngineHeader, check_header

log = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_ENV = "DEOCCLUDE_CACHE"


def cache_root(override: str | Path | None = None) -> Path:
    """``override`` if given, else ``$DEOCCLUDE_CACHE``, else ``~/.cache/deocclude``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "deocclude"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


@dataclass(frozen=True)
class EngineCache:
    """Paths of cached engines under ``root`` (see the module docstring); creates nothing until asked."""

    root: Path

    @classmethod
    def at(cls, override: str | Path | None = None) -> EngineCache:
        return cls(cache_root(override))

    def gpu_dir(self, gpu_name: str, gpu_compute_capability: str, tensorrt_version: str) -> Path:
        cc = gpu_compute_capability.replace(".", "")
        return self.root / "engines" / f"{_slug(gpu_name)}-sm{cc}" / f"trt-{_slug(tensorrt_version)}"

    def timing_cache_path(self, gpu_name: str, gpu_compute_capability: str, tensorrt_version: str) -> Path:
        # Timing entries are per tactic and GPU, not per model, so one file serves every build here.
        return self.gpu_dir(gpu_name, gpu_compute_capability, tensorrt_version) / "timing.cache"

    def timing_cache_for(self, key: EngineHeader) -> Path:
        """:meth:`timing_cache_path` of the GPU and TensorRT version ``key`` was (or is to be) built for."""
        return self.timing_cache_path(key.gpu_name, key.gpu_compute_capability, key.tensorrt_version)

    def engine_path(self, key: EngineHeader, *, name: str = "") -> Path:
        """Path of the engine for ``key`` (its build-time fields; ``built_at`` is ignored)."""
        directory = self.gpu_dir(key.gpu_name, key.gpu_compute_capability, key.tensorrt_version)
        stem = (
            f"{_slug(name or key.model.role)}-{key.onnx_sha256[:16]}-{key.precision}"
            f"-b{key.min_batch}_{key.opt_batch}_{key.max_batch}"
        )
        if key.backend == "torch-tensorrt":
            return directory / f"{stem}.torchtrt-{_slug(key.torch_tensorrt_version)}.ep"
        return directory / f"{stem}.engine"


def load_or_build(
    path: Path,
    want: EngineHeader,
    *,
    read_header: Callable[[Path], EngineHeader],
    load: Callable[[], T],
    build: Callable[[], T],
    allow_build: bool = True,
    what: str = "engine",
) -> T:
    """Use the cached engine at ``path`` or build one: the one place that decides.

    The cached file is used (``load()``) when its header (``read_header(path)``) matches ``want``;
    otherwise ``build()`` runs, with one log line saying why (none cached, stale: which fields, or
    unloadable). With ``allow_build=False`` a missing engine raises ModelLoadError and a stale one
    EngineMismatchError instead. RuntimeError from ``load`` (a runtime refusing the file) counts as
    unloadable.
    """
    reason = "none cached"
    if path.is_file():
        try:
            check_header(read_header(path), want, path=path)
            return load()
        except (EngineMismatchError, ModelLoadError, RuntimeError) as exc:
            if not allow_build:
                raise
            reason = str(exc)
    elif not allow_build:
        raise ModelLoadError(
            f"no {what} at {path}; build it with `python -m engines.build --onnx <model.onnx>`"
        )
    log.info("engine: building %s %s (%s)", what, path, reason)
    return build()
