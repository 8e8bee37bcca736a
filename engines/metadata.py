"""Model metadata on disk: :class:`ModelInfo` inside .onnx / .pt2 files, and the engine-file header.

Engine files (``.engine``) are a serialized TensorRT plan preceded by a header::

    MAGIC (8 bytes) | JSON length (uint32, little endian) | JSON (utf-8) | plan bytes

The JSON is an :class:`EngineHeader`: the ONNX file's sha256, its ModelInfo, the precision and batch
profile, and the TensorRT version and GPU it was built with. A plan only runs on the TensorRT version
and GPU architecture it was built for, so a loader compares the header with the current machine and
refuses (or rebuilds) rather than deserializing a stale plan. Everything here is pure Python.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from engines.base import METADATA_KEY, ModelInfo, TensorSpec
from engines.errors import EngineMismatchError, ModelLoadError
from engines.runtime import PRECISIONS

ENGINE_MAGIC = b"DEOCCENG"
HEADER_FORMAT_VERSION = 1
PT2_EXTRA_FILE = f"{METADATA_KEY}.json"
_LENGTH = struct.Struct("<I")
# A header is a few hundred bytes; a larger length means the file is not ours or is corrupt.
_MAX_HEADER_BYTES = 1 << 20

# The network tensor contract of engines/base.py, by role: (input names, output name, channels).
_ROLE_INPUTS: dict[str, tuple[tuple[str, int], ...]] = {
    "detector": (("image", 3),),
    "generator": (("image", 3), ("mask", 1)),
    "segmenter": (("image", 3),),
}
_ROLE_OUTPUTS: dict[str, tuple[tuple[str, int], ...]] = {
    "detector": (("mask", 1),),
    "generator": (("restored", 3),),
    "segmenter": (("face", 1), ("region", 1)),
}


def tensor_specs(info: ModelInfo) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The (inputs, outputs) every backend exposes for ``info``: NCHW float32, dynamic batch. A generator
    exported with ``extra["prior_input"]`` also takes ``prior`` (the face prior's guide image)."""
    s = info.crop_size
    roles = _ROLE_INPUTS[info.role]
    if info.role == "generator" and info.extra.get("prior_input"):
        roles = (*roles, ("prior", 3))
    inputs = tuple(TensorSpec(name, (-1, c, s, s)) for name, c in roles)
    outputs = tuple(TensorSpec(name, (-1, c, s, s)) for name, c in _ROLE_OUTPUTS[info.role])
    return inputs, outputs


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _info_from_text(text: str, where: str) -> ModelInfo:
    try:
        return ModelInfo.from_json(text)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"{where}: invalid {METADATA_KEY!r} metadata: {exc}") from exc


def read_onnx_info(path: str | Path) -> ModelInfo:
    """ModelInfo stored in the ONNX ``metadata_props`` under key ``deocclude``.

    Uses ``onnx`` when installed (reads the graph without external weights), else onnxruntime
    (a base dependency), so reading metadata never needs the training extras.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"ONNX model not found: {path}")
    props: Mapping[str, str]
    try:
        import onnx
    except ImportError:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelLoadError(f"{path} is not a loadable ONNX model: {exc}") from exc
        props = session.get_modelmeta().custom_metadata_map
    else:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError / ValueError for bad files
            raise ModelLoadError(f"{path} is not a loadable ONNX model: {exc}") from exc
        props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ModelLoadError(
            f"{path} has no {METADATA_KEY!r} metadata (keys: {sorted(props)}); export it with the project's exporter"
        )
    return _info_from_text(props[METADATA_KEY], str(path))


def write_onnx_info(path: str | Path, info: ModelInfo) -> None:
    """Store ``info`` in an existing ONNX file's metadata (needs the ``onnx`` package)."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=info.to_json())
    onnx.save(model, str(path))


def pt2_extra_files(info: ModelInfo) -> dict[str, str]:
    """The ``extra_files`` argument for ``torch.export.save`` that carries ``info``."""
    return {PT2_EXTRA_FILE: info.to_json()}


def read_pt2_info(path: str | Path) -> ModelInfo:
    """ModelInfo from a .pt2 archive's extra file ``deocclude.json``, read with zipfile (no torch)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"exported program not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{PT2_EXTRA_FILE}")]
            if not names:
                raise ModelLoadError(
                    f"{path} has no extra file {PT2_EXTRA_FILE!r}; export it with the project's exporter"
                )
            text = archive.read(names[0]).decode("utf-8")
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"{path} is not a .pt2 archive: {exc}") from exc
    return _info_from_text(text, str(path))


def pt2_sibling(onnx_path: str | Path) -> Path:
    """``models/small/generator.onnx`` -> ``models/small/generator.pt2``."""
    return Path(onnx_path).with_suffix(".pt2")


@dataclass(frozen=True)
class EngineHeader:
    """What an engine file was built from and for. ``built_at`` is ISO-8601 UTC and never compared."""

    onnx_sha256: str
    model: ModelInfo
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    tensorrt_version: str
    gpu_name: str
    gpu_compute_capability: str
    built_at: str = ""
    backend: str = "tensorrt"
    torch_tensorrt_version: str = ""
    format_version: int = HEADER_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"batch profile must satisfy 1 <= min <= opt <= max, got {self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if len(self.onnx_sha256) != 64:
            raise ValueError(f"onnx_sha256 must be 64 hex digits, got {self.onnx_sha256!r}")

    def to_json(self) -> str:
        data = asdict(self)
        data["model"] = json.loads(self.model.to_json())
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EngineHeader:
        data: dict[str, Any] = json.loads(text)
        data["model"] = ModelInfo.from_json(json.dumps(data["model"]))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def mismatches(self, expected: EngineHeader) -> list[str]:
        """Human-readable differences from ``expected`` ("precision: engine fp16, wanted fp32")."""
        out = []
        for f in fields(self):
            if f.name == "built_at":
                continue
            got, want = getattr(self, f.name), getattr(expected, f.name)
            if got != want:
                out.append(f"{f.name}: engine {got!r}, wanted {want!r}")
        return out


def check_header(header: EngineHeader, expected: EngineHeader, *, path: str | Path = "engine") -> None:
    """Raise :class:`EngineMismatchError` naming every field where ``header`` differs from ``expected``."""
    problems = header.mismatches(expected)
    if problems:
        raise EngineMismatchError(
            f"{path} was built for something else ({'; '.join(problems)}); rebuild it with "
            f"`python -m engines.build --onnx <model.onnx> ...` or let the loader rebuild it"
        )


def write_engine_file(path: str | Path, header: EngineHeader, plan: bytes | memoryview) -> None:
    """Write header + plan atomically (a crash mid-write never leaves a half engine under ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = header.to_json().encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(ENGINE_MAGIC)
        f.write(_LENGTH.pack(len(blob)))
        f.write(blob)
        f.write(plan)
    os.replace(tmp, path)


def _read_header(f: Any, path: Path) -> EngineHeader:
    magic = f.read(len(ENGINE_MAGIC))
    if magic != ENGINE_MAGIC:
        raise EngineMismatchError(
            f"{path} has no deocclude engine header (a bare TensorRT plan or another file); "
            "rebuild it with `python -m engines.build`"
        )
    raw_length = f.read(_LENGTH.size)
    if len(raw_length) != _LENGTH.size:
        raise ModelLoadError(f"{path} is truncated inside the engine header")
    (length,) = _LENGTH.unpack(raw_length)
    if length > _MAX_HEADER_BYTES:
        raise ModelLoadError(
            f"{path} declares a {length}-byte header (max {_MAX_HEADER_BYTES}); the file is corrupt"
        )
    blob = f.read(length)
    if len(blob) != length:
        raise ModelLoadError(f"{path} is truncated inside the engine header")
    try:
        return EngineHeader.from_json(blob.decode("utf-8"))
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"{path} has an unreadable engine header: {exc}") from exc


def read_engine_header(path: str | Path) -> EngineHeader:
    """The header alone (cheap: the plan is not read)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"engine file not found: {path}")
    with open(path, "rb") as f:
        return _read_header(f, path)


def read_engine_file(path: str | Path) -> tuple[EngineHeader, bytes]:
    """(header, serialized plan). Raises ModelLoadError for a missing/corrupt file, EngineMismatchError without header."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"engine file not found: {path}")
    with open(path, "rb") as f:
        header = _read_header(f, path)
        plan = f.read()
    if not plan:
        raise ModelLoadError(f"{path} has a header but no serialized plan")
    return header, plan


def write_header_sidecar(path: str | Path, header: EngineHeader) -> Path:
    """For artifacts that cannot carry a prefix (torch-tensorrt programs): ``<path>.json`` next to them."""
    sidecar = Path(f"{path}.json")
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
    tmp.write_text(header.to_json(), encoding="utf-8")
    os.replace(tmp, sidecar)
    return sidecar


def read_header_sidecar(path: str | Path) -> EngineHeader:
    sidecar = Path(f"{path}.json")
    if not sidecar.is_file():
        raise EngineMismatchError(f"{path} has no header file {sidecar.name}; rebuild it")
    try:
        return EngineHeader.from_json(sidecar.read_text(encoding="utf-8"))
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"{sidecar} is unreadable: {exc}") from exc
