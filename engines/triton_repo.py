"""Write a Triton model repository for our networks: ``python -m engines.triton_repo --models models/small --out repo/``.

Layout (one model per network, named by its role, which is what :class:`engines.triton_engine.TritonEngine`
asks the server for)::

    repo/<role>/config.pbtxt
    repo/<role>/1/model.onnx                  platform "onnxruntime_onnx" (default, for every .onnx)
    repo/<role>/1/model.plan                  platform "tensorrt_plan" (--engine FILE: built by engines.build)
    repo/<role>/1/model.py + model.onnx       backend "python" (--python-backend: onnxruntime inside
                                              Triton's Python backend, the stand-in that runs where the
                                              server has only that backend, e.g. nvidia-pytriton's)

Each config.pbtxt declares the tensors of :func:`engines.metadata.tensor_specs` (FP32, dims ``[C, S, S]``
after the batch axis), ``max_batch_size``, ``dynamic_batching`` (requests of several clients are batched
on the server) and ``instance_group``, and carries in ``parameters`` our ModelInfo (``deocclude``, JSON)
and the sha256 of the ONNX file it came from (``onnx_sha256``; for a plan, the one in its engine
header), which the client compares with its local .onnx at connect.

A plan only runs on the TensorRT version and GPU it was built for: serve it with the Triton release
that ships the TensorRT of its header (``tensorrt_version`` is in the parameters too). On a GPU host::

    docker run --gpus all --rm -p8000:8000 -v $PWD/repo:/models \\
        nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engines.base import ModelInfo, TensorSpec
from engines.errors import EngineError, ModelLoadError
from engines.metadata import EngineHeader, read_engine_file, read_onnx_info, sha256_file, tensor_specs

log = logging.getLogger(__name__)

KINDS = ("gpu", "cpu")
# What the model directory holds, by how it is served: Triton's platform / backend line.
SERVING = {
    "onnx": 'platform: "onnxruntime_onnx"',
    "plan": 'platform: "tensorrt_plan"',
    "python": 'backend: "python"',
}
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")


@dataclass(frozen=True)
class RepoConfig:
    """How every model of the repository is served.

    ``max_batch``: ``max_batch_size`` of ONNX models (a plan keeps its profile's max). ``queue_delay_us``:
    how long the dynamic batcher waits to fill a batch. ``instances``: model instances (``instance_group``
    count) per GPU, or on the CPU. ``kind``: where ONNX models run ("gpu" or "cpu"); plans always run on
    the GPU and the Python stand-in on the CPU. ``intra_threads``: onnxruntime threads of the Python
    stand-in (0 = onnxruntime's default).
    """

    max_batch: int = 8
    queue_delay_us: int = 500
    instances: int = 1
    kind: str = "gpu"
    python_backend: bool = False
    intra_threads: int = 0

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.queue_delay_us < 0:
            raise ValueError(f"queue_delay_us must be >= 0, got {self.queue_delay_us}")
        if self.instances < 1:
            raise ValueError(f"instances must be >= 1, got {self.instances}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.intra_threads < 0:
            raise ValueError(
                f"intra_threads must be >= 0 (0 = onnxruntime's default), got {self.intra_threads}"
            )


@dataclass(frozen=True)
class RepoModel:
    """One model of the repository: ``serving`` is a key of :data:`SERVING`."""

    name: str
    serving: str
    source: Path
    info: ModelInfo
    onnx_sha256: str
    max_batch: int
    header: EngineHeader | None = None


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tensors(specs: tuple[TensorSpec, ...]) -> str:
    rows = [
        f"  {{ name: {_quote(s.name)} data_type: TYPE_FP32 dims: [ {', '.join(str(d) for d in s.shape[1:])} ] }}"
        for s in specs
    ]
    return "[\n" + ",\n".join(rows) + "\n]"


def config_pbtxt(model: RepoModel, config: RepoConfig) -> str:
    """The ``config.pbtxt`` text of ``model``."""
    inputs, outputs = tensor_specs(model.info)
    kind = {"onnx": config.kind, "plan": "gpu", "python": "cpu"}[model.serving]
    params = {"deocclude": model.info.to_json(), "onnx_sha256": model.onnx_sha256}
    if model.header is not None:
        h = model.header
        params.update(
            precision=h.precision,
            tensorrt_version=h.tensorrt_version,
            gpu_name=h.gpu_name,
            gpu_compute_capability=h.gpu_compute_capability,
        )
    if model.serving == "python":
        params["intra_threads"] = str(config.intra_threads)
    lines = [
        f"name: {_quote(model.name)}",
        SERVING[model.serving],
        f"max_batch_size: {model.max_batch}",
        f"input {_tensors(inputs)}",
        f"output {_tensors(outputs)}",
        f"dynamic_batching {{ max_queue_delay_microseconds: {config.queue_delay_us} }}",
        f"instance_group [ {{ count: {config.instances} kind: KIND_{kind.upper()} }} ]",
    ]
    lines += [
        f"parameters {{ key: {_quote(k)} value: {{ string_value: {_quote(v)} }} }}" for k, v in params.items()
    ]
    return "\n".join(lines) + "\n"


def collect(models: Path, engines: Sequence[Path] = (), config: RepoConfig | None = None) -> list[RepoModel]:
    """The models of a repository: every .onnx of ``models`` that carries our metadata (others are skipped
    with a log line), and ``engines`` (files of ``python -m engines.build``) in place of the .onnx of
    their role. One model per role: a second file of a role is a ModelLoadError."""
    config = config or RepoConfig()
    if not models.is_dir():
        raise ModelLoadError(f"model directory not found: {models}")
    if engines and config.python_backend:
        raise ValueError(
            "--engine (tensorrt_plan) and --python-backend do not mix: the Python stand-in runs .onnx only"
        )
    found: dict[str, RepoModel] = {}
    for path in sorted(models.glob("*.onnx")):
        try:
            info = read_onnx_info(path)
        except ModelLoadError as exc:
            log.warning("triton_repo: skipping %s (%s)", path, exc)
            continue
        if info.role in found:
            raise ModelLoadError(
                f"{models} has two {info.role} networks: {found[info.role].source.name} and {path.name}"
            )
        serving = "python" if config.python_backend else "onnx"
        found[info.role] = RepoModel(info.role, serving, path, info, sha256_file(path), config.max_batch)
    for path in engines:
        header, _ = read_engine_file(path)
        role = header.model.role
        if role in found:
            log.info(
                "triton_repo: %s serves the %s (TensorRT plan) instead of %s",
                path,
                role,
                found[role].source.name,
            )
        found[role] = RepoModel(
            role, "plan", path, header.model, header.onnx_sha256, header.max_batch, header
        )
    if not found:
        raise ModelLoadError(f"{models} holds no deocclude network (.onnx with {'deocclude'!r} metadata)")
    return [found[role] for role in sorted(found)]


def write_repository(
    models: str | Path,
    out: str | Path,
    *,
    engines: Sequence[str | Path] = (),
    config: RepoConfig | None = None,
) -> list[RepoModel]:
    """Write the repository of ``models`` (and ``engines``) under ``out``; returns what it wrote.

    A model directory of the same name already under ``out`` is replaced; other entries are kept.
    """
    config = config or RepoConfig()
    entries = collect(Path(models), [Path(e) for e in engines], config)
    out = Path(out)
    for model in entries:
        root = out / model.name
        if root.exists():
            shutil.rmtree(root)
        version = root / "1"
        version.mkdir(parents=True)
        if model.serving == "plan":
            _, plan = read_engine_file(model.source)
            (version / "model.plan").write_bytes(plan)  # Triton reads a bare plan: our header stays out
        else:
            shutil.copyfile(model.source, version / "model.onnx")
        if model.serving == "python":
            shutil.copyfile(PYTHON_MODEL, version / "model.py")
        (root / "config.pbtxt").write_text(config_pbtxt(model, config), encoding="utf-8")
        log.info(
            "triton_repo: %s <- %s (%s, max batch %d)", root, model.source, model.serving, model.max_batch
        )
    return entries


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engines.triton_repo",
        description="Write a Triton Inference Server model repository for a deocclude model directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--models", type=Path, required=True, help="directory of .onnx networks (e.g. models/small)"
    )
    p.add_argument("--out", type=Path, required=True, help="repository directory to write")
    p.add_argument(
        "--engine",
        type=Path,
        action="append",
        default=[],
        help="a TensorRT engine of python -m engines.build, served as tensorrt_plan in place of its role's .onnx",
    )
    p.add_argument(
        "--python-backend",
        action="store_true",
        help="serve each .onnx with onnxruntime inside Triton's Python backend (for servers with only that backend)",
    )
    p.add_argument("--max-batch", type=int, default=8, help="max_batch_size of the ONNX models")
    p.add_argument("--queue-delay-us", type=int, default=500, help="dynamic batcher's max queue delay")
    p.add_argument("--instances", type=int, default=1, help="model instances (per GPU, or on the CPU)")
    p.add_argument("--kind", choices=KINDS, default="gpu", help="where the onnxruntime_onnx models run")
    p.add_argument("--intra-threads", type=int, default=0, help="onnxruntime threads of the Python stand-in")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit code (0 written, 1 a bad model directory, engine file or option)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    try:
        config = RepoConfig(
            max_batch=args.max_batch,
            queue_delay_us=args.queue_delay_us,
            instances=args.instances,
            kind=args.kind,
            python_backend=args.python_backend,
            intra_threads=args.intra_threads,
        )
        entries = write_repository(args.models, args.out, engines=args.engine, config=config)
    except (EngineError, OSError, ValueError) as exc:
        print(f"engines.triton_repo: {exc}", file=sys.stderr)
        return 1
    print(
        f"engines.triton_repo: wrote {len(entries)} models to {args.out}: {', '.join(m.name for m in entries)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
