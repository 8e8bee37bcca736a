"""Build TensorRT engines ahead of time: ``python -m engines.build --onnx model.onnx --precision fp16 ...``.

The command line of :mod:`engines.trt_build` (native TensorRT) and of torch-tensorrt's
:func:`engines.torch_tensorrt_engine.compile_and_save`; engines land in the per-GPU engine cache
(:mod:`engines.cache`) unless ``--out`` says otherwise. ``tensorrt`` is imported inside functions, so
``--help`` and the "not installed" message work anywhere.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from engines.cache import EngineCache
from engines.errors import BackendUnavailableError, EngineError
from engines.headers import tensorrt_header
from engines.runtime import PRECISIONS, import_tensorrt, import_torch_tensorrt
from engines.trt_build import BuildConfig, build_engine

BUILD_BACKENDS = ("tensorrt", "torch-tensorrt")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engines.build",
        description="Build a TensorRT (or torch-tensorrt) engine for an exported deocclude network.",
    )
    p.add_argument(
        "--onnx",
        type=Path,
        required=True,
        help="exported network (.onnx; torch-tensorrt uses the .pt2 next to it)",
    )
    p.add_argument("--precision", choices=PRECISIONS, default="fp16")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=None, help="default: --max-batch")
    p.add_argument("--out", type=Path, default=None, help="engine file (default: the per-GPU engine cache)")
    p.add_argument("--workspace-gb", type=float, default=4.0)
    p.add_argument("--timing-cache", type=Path, default=None, help="default: the per-GPU timing cache")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache root (default: $DEOCCLUDE_CACHE or ~/.cache/deocclude)",
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--backend", choices=BUILD_BACKENDS, default="tensorrt")
    p.add_argument(
        "--no-fp32-attention", action="store_true", help="do not pin attention layers to fp32 in fp16 builds"
    )
    return p


def _run(args: argparse.Namespace) -> Path:
    cache = EngineCache.at(args.cache_dir)
    if args.backend == "torch-tensorrt":
        from engines.torch_tensorrt_engine import compile_and_save

        return compile_and_save(
            args.onnx,
            out=args.out,
            precision=args.precision,
            min_batch=args.min_batch,
            opt_batch=args.opt_batch or args.max_batch,
            max_batch=args.max_batch,
            workspace_gb=args.workspace_gb,
            device=args.device,
            cache_dir=args.cache_dir,
        )
    want = tensorrt_header(
        args.onnx,
        precision=args.precision,
        min_batch=args.min_batch,
        opt_batch=args.opt_batch or args.max_batch,
        max_batch=args.max_batch,
        device=args.device,
    )
    out = args.out or cache.engine_path(want, name=args.onnx.stem)
    timing = args.timing_cache or cache.timing_cache_path(
        want.gpu_name, want.gpu_compute_capability, want.tensorrt_version
    )
    build_engine(
        BuildConfig(
            onnx=args.onnx,
            out=out,
            precision=args.precision,
            min_batch=args.min_batch,
            opt_batch=args.opt_batch,
            max_batch=args.max_batch,
            workspace_gb=args.workspace_gb,
            timing_cache=timing,
            device=args.device,
            pin_attention_fp32=not args.no_fp32_attention,
        )
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit code (0 built, 2 runtime not installed, 1 any other error)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        # The install hint comes before any file is read.
        if args.backend == "tensorrt":
            import_tensorrt()
        else:
            import_torch_tensorrt()
        out = _run(args)
    except BackendUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (EngineError, ValueError, OSError) as exc:
        print(f"engines.build: {exc}", file=sys.stderr)
        return 1
    print(f"engines.build: wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
