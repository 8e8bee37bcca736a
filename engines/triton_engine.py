"""Triton Inference Server backend: the network runs on a server, this engine is its HTTP client.

``TritonEngine(onnx_path, TritonOptions(url="http://host:8000"))`` behaves like every other engine:
numpy float32 NCHW in, numpy out, keyed by the names of :func:`engines.metadata.tensor_specs`, so the
per-frame flow runs unchanged against a remote server, and requests of several streams (clients) are
batched on the server by its dynamic batcher.

- **Model and metadata.** The server model is named by the network's role (``detector``,
  ``generator``, ``segmenter``: what :mod:`engines.triton_repo` writes). ModelInfo is read from the
  local ``.onnx``, as on every backend (the ``--models`` directory says which networks a run uses);
  at connect the server's model metadata must declare exactly our inputs and outputs (FP32,
  ``[-1, C, S, S]``), and the ModelInfo and ONNX sha256 that the repository writer put in the config's
  ``parameters`` must match the local file, so a stale repository is refused (EngineMismatchError)
  instead of serving another network. A hand-written config without those parameters is accepted with
  one logged line (the tensors are still checked).
- **HTTP only.** ``tritonclient[grpc]`` needs protobuf >= 6.30 and mediapipe (the face prior) needs
  protobuf < 5; both cannot import in one environment, so this environment has ``tritonclient[http]``
  and a ``grpc://`` URL is refused with that reason (BackendUnavailableError) rather than mapped.
- **Failures.** Every request has ``timeout_s`` (connect and network); connection errors, timeouts and
  HTTP 429/502/503/504 are retried ``retries`` times with exponential backoff (inference is stateless,
  so a retried request is the same request). No server: ServerError; a model the server does not have
  or could not load: ModelLoadError; each is one line naming the URL and what to do.
- **Shared memory** (``shared_memory=True``): inputs and outputs travel through POSIX shared memory
  regions registered with the server once (one per tensor, sized for the largest batch) instead of
  the HTTP body; only for a server on the same host (it opens the same ``/dev/shm``; in Docker, run it
  with ``--ipc=host``).
- **Threads.** A tritonclient HTTP client is bound to the thread that first uses it (gevent), and the
  pipeline loads engines in one thread and runs them in its stage threads: each thread gets its own
  client. ``device`` is "cpu": that is where the client's arrays live, whatever the server runs on.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from engines.base import ModelInfo, TensorSpec, check_feeds, feeds_as_torch
from engines.errors import (
    BackendUnavailableError,
    EngineError,
    EngineMismatchError,
    ModelLoadError,
    ServerError,
)
from engines.metadata import read_onnx_info, sha256_file, tensor_specs

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
TRANSIENT_HTTP = ("429", "502", "503", "504")
GRPC_REFUSED = (
    "grpc:// is not available: tritonclient[grpc] needs protobuf>=6.30 while mediapipe (the face prior) "
    "needs protobuf<5, so this environment has tritonclient[http] only; use the server's HTTP port, "
    "e.g. --triton-url http://HOST:8000"
)
_REGION_IDS = itertools.count()


def parse_url(url: str) -> tuple[str, bool]:
    """``http://host:8000`` -> (``"host:8000"``, ssl False); ``https://`` -> ssl True; a bare ``host[:port]``
    is HTTP; the port defaults to 8000 (Triton's HTTP port). ``grpc://`` is a BackendUnavailableError
    (see the module docstring), anything else a ValueError."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme == "grpc":
        raise BackendUnavailableError(GRPC_REFUSED)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"triton url must be http://HOST[:PORT] or https://HOST[:PORT], got {url!r}")
    try:
        port = parts.port or 8000
    except ValueError as exc:
        raise ValueError(f"triton url {url!r} has an invalid port: {exc}") from exc
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", parts.scheme == "https"


@dataclass(frozen=True)
class TritonOptions:
    """Where the server is and how to talk to it; see the module docstring for each field's effect."""

    url: str = DEFAULT_URL
    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.2
    shared_memory: bool = False

    def __post_init__(self) -> None:
        parse_url(self.url)
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {self.backoff_s}")


def _transient(exc: BaseException) -> bool:
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        return str(exc.status()) in TRANSIENT_HTTP
    return isinstance(exc, OSError)  # refused, reset, unreachable, socket timeouts


def _describe(exc: BaseException) -> str:
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        return exc.message() or str(exc)
    return f"{type(exc).__name__}: {exc}"


class TritonEngine:
    """One network served by Triton, reached over HTTP (the Engine protocol of :mod:`engines.base`).

    ``onnx_path``: the local exported network whose ModelInfo the server's model must match.
    ``max_batch`` bounds a run's batch like an engine profile; a batch above the server's
    ``max_batch_size`` is sent as several requests.
    """

    backend = "triton"
    device = "cpu"

    def __init__(
        self, onnx_path: str | Path, options: TritonOptions | None = None, *, max_batch: int | None = 8
    ) -> None:
        try:
            import tritonclient.http as httpclient
        except ImportError as exc:
            raise BackendUnavailableError(
                "tritonclient is not installed: pip install 'deocclude[scale]' (tritonclient[http])"
            ) from exc
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 or None, got {max_batch}")
        self._http = httpclient
        self.options = options or TritonOptions()
        self.path = Path(onnx_path)
        self.info: ModelInfo = read_onnx_info(self.path)
        self.inputs: tuple[TensorSpec, ...]
        self.outputs: tuple[TensorSpec, ...]
        self.inputs, self.outputs = tensor_specs(self.info)
        self.model_name = self.info.role
        self.max_batch = max_batch
        self.url = self.options.url
        self._address, self._ssl = parse_url(self.url)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        self._region_lock = threading.Lock()  # one set of regions per engine: one request at a time
        self._regions: dict[str, tuple[str, Any, int]] = {}
        self._closed = False
        try:
            server_max = self._connect()
            self.server_max_batch = server_max
            limits = [x for x in (max_batch, server_max) if x]
            self._chunk = min(limits) if limits else 64
            if self.options.shared_memory:
                self._register_regions()
        except BaseException:
            self.close()
            raise
        log.info(
            "engine: triton %s at %s (server max batch %s%s)",
            self.model_name,
            self.url,
            server_max or "unbatched",
            ", system shared memory" if self.options.shared_memory else "",
        )

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            t = self.options.timeout_s
            client = self._http.InferenceServerClient(
                self._address, ssl=self._ssl, connection_timeout=t, network_timeout=t
            )
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(client)`` with the retries of the options; a failure left after them is a ServerError."""
        attempts = self.options.retries + 1
        for attempt in range(attempts):
            try:
                return fn(self._client())
            except Exception as exc:  # tritonclient raises InferenceServerException and socket errors
                if not _transient(exc):
                    raise
                if attempt + 1 == attempts:
                    raise ServerError(
                        f"no answer from the Triton server at {self.url}: {what} failed {attempts} times "
                        f"({_describe(exc)}); is it running? (README: 'Many streams: Triton')"
                    ) from exc
                time.sleep(self.options.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def _connect(self) -> int | None:
        """Check server, model and tensors; returns the server's max_batch_size (None: no batching)."""
        from tritonclient.utils import InferenceServerException

        name = self.model_name
        try:
            live = self._call("a liveness check", lambda c: c.is_server_live())
            if not live:
                raise ServerError(f"Triton server at {self.url} answers but is not live")
            if not self._call("a readiness check", lambda c: c.is_model_ready(name)):
                raise ModelLoadError(self._not_ready(name))
            metadata = self._call("a metadata request", lambda c: c.get_model_metadata(name))
            config = self._call("a config request", lambda c: c.get_model_config(name))
        except InferenceServerException as exc:
            raise ServerError(
                f"Triton server at {self.url} refused a request for {name!r}: {_describe(exc)}"
            ) from exc
        self._check_tensors(metadata)
        self._check_provenance(config)
        return int(config.get("max_batch_size", 0)) or None

    def _not_ready(self, name: str) -> str:
        index = self._call("a repository index request", lambda c: c.get_model_repository_index())
        entries = {m.get("name"): m for m in index}
        where = f"the Triton server at {self.url}"
        if name not in entries:
            have = ", ".join(sorted(str(n) for n in entries)) or "nothing"
            return (
                f"{where} has no model {name!r} for {self.path} (it has: {have}); write one with "
                f"python -m engines.triton_repo --models {self.path.parent} --out REPO"
            )
        entry = entries[name]
        return f"{where} has model {name!r} but it is {entry.get('state', 'not ready')}: {entry.get('reason', '')}".rstrip(
            ": "
        )

    def _check_tensors(self, metadata: Mapping[str, Any]) -> None:
        def table(rows: Any) -> dict[str, tuple[str, tuple[int, ...]]]:
            return {r["name"]: (r["datatype"], tuple(int(d) for d in r["shape"])) for r in rows}

        got = (table(metadata.get("inputs", [])), table(metadata.get("outputs", [])))
        want = tuple({s.name: ("FP32", s.shape) for s in specs} for specs in (self.inputs, self.outputs))
        if got != want:
            raise EngineMismatchError(
                f"Triton model {self.model_name!r} at {self.url} has inputs/outputs {got}, but {self.path} "
                f"(a {self.info.crop_size} px {self.info.role}) needs {want}; rewrite the repository from this model directory"
            )

    def _check_provenance(self, config: Mapping[str, Any]) -> None:
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if "deocclude" not in params or "onnx_sha256" not in params:
            log.warning(
                "engine: Triton model %r at %s carries no deocclude/onnx_sha256 parameters; only its tensors were checked",
                self.model_name,
                self.url,
            )
            return
        problems = []
        try:
            served = ModelInfo.from_json(params["deocclude"])
        except (ValueError, TypeError) as exc:
            problems.append(f"unreadable ModelInfo ({exc})")
        else:
            for field in ("role", "crop_size", "profile", "iterations", "git_revision"):
                if getattr(served, field) != getattr(self.info, field):
                    problems.append(
                        f"{field}: server {getattr(served, field)!r}, local {getattr(self.info, field)!r}"
                    )
        if params["onnx_sha256"] != (local := sha256_file(self.path)):
            problems.append(f"onnx sha256: server {params['onnx_sha256'][:12]}..., local {local[:12]}...")
        if problems:
            raise EngineMismatchError(
                f"Triton model {self.model_name!r} at {self.url} was made from another network than {self.path} "
                f"({'; '.join(problems)}); rewrite the repository with python -m engines.triton_repo"
            )

    def _register_regions(self) -> None:
        import tritonclient.utils.shared_memory as shm

        for spec in (*self.inputs, *self.outputs):
            size = self._chunk * int(np.prod(spec.shape[1:])) * 4
            name = f"deocclude_{os.getpid()}_{next(_REGION_IDS)}_{self.model_name}_{spec.name}"
            handle = shm.create_shared_memory_region(name, f"/{name}", size)
            self._regions[spec.name] = (name, handle, size)

            def register(client: Any, region: str = name, nbytes: int = size) -> None:
                client.register_system_shared_memory(region, f"/{region}", nbytes)

            try:
                self._call("a shared memory registration", register)
            except ServerError:
                raise
            except Exception as exc:  # the server could not open the region: another host, or no /dev/shm
                raise ServerError(
                    f"Triton server at {self.url} cannot map shared memory ({_describe(exc)}); shared memory "
                    "needs the server on this host (in Docker: --ipc=host); run without it"
                ) from exc

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """numpy in -> numpy out (CPU torch tensors in -> torch tensors out); float32 NCHW."""
        if self._closed:
            raise EngineError(f"{self.backend} engine for {self.path} is closed")
        batch = check_feeds(self.inputs, feeds, max_batch=self.max_batch)
        as_torch = feeds_as_torch(feeds, self.device)
        arrays = {
            k: np.ascontiguousarray(v.detach().contiguous().numpy() if as_torch else v)
            for k, v in feeds.items()
        }
        parts = [
            self._infer({k: a[i : i + self._chunk] for k, a in arrays.items()})
            for i in range(0, batch, self._chunk)
        ]
        outs = {
            s.name: parts[0][s.name] if len(parts) == 1 else np.concatenate([p[s.name] for p in parts])
            for s in self.outputs
        }
        if as_torch:
            import torch

            return {k: torch.from_numpy(v) for k, v in outs.items()}
        return outs

    def _infer(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tritonclient.utils import InferenceServerException

        http = self._http
        n = next(iter(arrays.values())).shape[0]
        inputs, outputs = [], []
        for spec in self.inputs:
            item = http.InferInput(spec.name, list(arrays[spec.name].shape), "FP32")
            if self._regions:
                region, handle, _ = self._regions[spec.name]
                import tritonclient.utils.shared_memory as shm

                shm.set_shared_memory_region(handle, [arrays[spec.name]])
                item.set_shared_memory(region, arrays[spec.name].nbytes)
            else:
                item.set_data_from_numpy(arrays[spec.name], binary_data=True)
            inputs.append(item)
        for spec in self.outputs:
            wanted = http.InferRequestedOutput(spec.name, binary_data=True)
            if self._regions:
                wanted.set_shared_memory(self._regions[spec.name][0], n * int(np.prod(spec.shape[1:])) * 4)
            outputs.append(wanted)
        name = self.model_name
        try:
            if self._regions:
                with self._region_lock:
                    result = self._call("an inference", lambda c: c.infer(name, inputs, outputs=outputs))
                    return {s.name: self._read_region(s, n) for s in self.outputs}
            result = self._call("an inference", lambda c: c.infer(name, inputs, outputs=outputs))
        except InferenceServerException as exc:
            raise EngineError(f"Triton model {name!r} at {self.url} failed: {_describe(exc)}") from exc
        return {s.name: result.as_numpy(s.name) for s in self.outputs}

    def _read_region(self, spec: TensorSpec, n: int) -> np.ndarray:
        import tritonclient.utils.shared_memory as shm

        handle = self._regions[spec.name][1]
        view = shm.get_contents_as_numpy(handle, np.float32, [n, *spec.shape[1:]])
        return np.array(view)  # the next request overwrites the region

    def warmup(self, batch: int = 1) -> None:
        """One request at ``batch`` (the server's first request of a model loads lazily, too)."""
        self.run({s.name: np.zeros((batch, *s.shape[1:]), np.float32) for s in self.inputs})

    def close(self) -> None:
        """Unregister and free the shared memory regions and close the clients (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._regions:
            import tritonclient.utils.shared_memory as shm

            for region, handle, _ in self._regions.values():
                try:
                    self._client().unregister_system_shared_memory(region)
                except Exception as exc:  # the server may be gone; the region is freed below either way
                    log.debug("engine: could not unregister %s at %s: %s", region, self.url, exc)
                shm.destroy_shared_memory_region(handle)
            self._regions.clear()
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception as exc:  # a client of another thread's gevent hub
                log.debug("engine: closing a Triton client: %s", exc)

    def __enter__(self) -> TritonEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def server_models(url: str, timeout_s: float = 5.0) -> dict[str, str]:
    """``{model name: state}`` of the server's repository (for tests and benchmarks)."""
    import tritonclient.http as httpclient

    address, ssl = parse_url(url)
    client = httpclient.InferenceServerClient(
        address, ssl=ssl, connection_timeout=timeout_s, network_timeout=timeout_s
    )
    try:
        return {str(m["name"]): str(m.get("state", "")) for m in client.get_model_repository_index()}
    finally:
        client.close()
