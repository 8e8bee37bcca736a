"""Typed errors of the engines package; each is also a builtin so callers can catch what they know."""

from __future__ import annotations


class EngineError(RuntimeError):
    """Base class for errors raised while loading or running a network."""


class ModelLoadError(EngineError, OSError):
    """A model or engine file is missing, corrupt or of the wrong kind."""


class BackendUnavailableError(EngineError, ImportError):
    """The requested backend's runtime (onnxruntime, torch, tensorrt, ...) is not installed or has no device."""


class EngineMismatchError(EngineError, ValueError):
    """An engine file was built for another model, GPU, precision or runtime version."""


class ServerError(EngineError, ConnectionError):
    """A model server (Triton) cannot be reached, is not ready, or failed a request after its retries."""


class ShapeError(EngineError, ValueError):
    """An input's shape or dtype is outside what the engine accepts (e.g. outside its batch profile)."""
