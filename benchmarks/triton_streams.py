"""Many streams against one Triton server: faces/s and per-stream latency for 1, 4 and 16 concurrent
streams, over HTTP and over system shared memory, with the server's dynamic batching.

    python -m benchmarks.triton_streams --streams 1 4 16 --seconds 8 --rounds 2 \\
        --json benchmarks/results/triton_streams_cpu.json

Each stream is its own process with its own :class:`engines.triton_engine.TritonEngine` client, and
sends what the pipeline's restore step sends: generator requests of ``--faces`` crops (image and mask,
float32 RGB in [0, 1], 128 px for models/small), one after the other as fast as answers come (a file
restored as fast as it can go). All streams start together behind a barrier and run ``--seconds``.
The server's own statistics give the mean batch it executed (how many requests of different streams
it put together). Rounds alternate the order of the configurations, because the machine is shared.

The server is the ``tritonserver`` bundled in ``nvidia-pytriton`` (``.venv-triton``), on loopback on
the same CPU as the clients, serving ``python -m engines.triton_repo --python-backend``: onnxruntime on
the CPU inside Triton's Python backend, the stand-in for the onnxruntime_onnx backend (which that
server lacks). A baseline row runs the same requests on onnxruntime in this process, no server.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.environment import device_info, git, versions
from benchmarks.report import setup_logging, write_report
from engines.assets import models_dir

log = logging.getLogger("benchmarks.triton_streams")

TRANSPORTS = ("http", "shm")
_FIRST_SEED = 1234


def _run_for(engine: Any, feeds: dict[str, Any], seconds: float) -> tuple[list[float], float]:
    """Run ``feeds`` back to back for ``seconds``: (per-request latencies in s, elapsed s)."""
    latencies = []
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        engine.run(feeds)
        latencies.append(time.perf_counter() - now)
    return latencies, time.perf_counter() - start


def _feeds(specs: Any, faces: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.name: rng.random((faces, *s.shape[1:]), dtype=np.float32) for s in specs}


def _percentiles(latencies_s: list[float]) -> dict[str, float | None]:
    if not latencies_s:
        return {"p50": None, "p95": None}
    ms = np.asarray(latencies_s) * 1e3
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2)}


def stream_worker(
    url: str,
    onnx: str,
    faces: int,
    seconds: float,
    shared_memory: bool,
    index: int,
    barrier: Any,
    results: Any,
) -> None:
    """One stream (a spawned process): its own client; closed-loop generator requests for ``seconds``."""
    from engines.triton_engine import TritonEngine, TritonOptions

    try:
        engine = TritonEngine(
            onnx, TritonOptions(url=url, shared_memory=shared_memory, timeout_s=60), max_batch=faces
        )
        feeds = _feeds(engine.inputs, faces, _FIRST_SEED + index)
        engine.warmup(faces)
        barrier.wait(timeout=300)
        latencies, elapsed = _run_for(engine, feeds, seconds)
        engine.close()
        results.put((index, latencies, elapsed, None))
    except Exception as exc:  # reported to the parent, which fails the run with it
        results.put((index, [], 0.0, f"{type(exc).__name__}: {exc}"))


def _server_counts(url: str, model: str) -> tuple[int, int, int, float, float]:
    """(inference_count, execution_count, requests, queue ns, compute_infer ns) of ``model`` so far.

    Triton adds a batch's compute time to every request in it, so compute ns / requests is the mean
    time of the batch a request was in, not a sum over executions."""
    import tritonclient.http as httpclient

    from engines.triton_engine import parse_url

    client = httpclient.InferenceServerClient(parse_url(url)[0])
    try:
        stats = client.get_inference_statistics(model)["model_stats"][0]
    finally:
        client.close()
    inference = stats["inference_stats"]
    return (
        int(stats["inference_count"]),
        int(stats["execution_count"]),
        int(inference["success"]["count"]),
        float(inference["queue"]["ns"]),
        float(inference["compute_infer"]["ns"]),
    )


def run_streams(
    url: str, onnx: Path, streams: int, faces: int, seconds: float, transport: str
) -> dict[str, Any]:
    """One configuration: ``streams`` processes at once; aggregate and per-stream numbers."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(streams + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=stream_worker,
            args=(url, str(onnx), faces, seconds, transport == "shm", i, barrier, results),
            daemon=True,
        )
        for i in range(streams)
    ]
    for w in workers:
        w.start()
    barrier.wait(timeout=300)
    before = _server_counts(url, "generator")
    load_before = os.getloadavg()[0]
    got = [results.get(timeout=seconds + 300) for _ in workers]
    after = _server_counts(url, "generator")
    for w in workers:
        w.join(timeout=30)
    errors = [e for _, _, _, e in got if e]
    if errors:
        raise RuntimeError(f"{len(errors)} of {streams} streams failed: {errors[0]}")
    got.sort(key=lambda r: r[0])
    inferences, executions, requests = (after[i] - before[i] for i in range(3))
    per_stream = [
        {
            "stream": i,
            "requests": len(lat),
            "faces_per_s": round(len(lat) * faces / elapsed, 2),
            "latency_ms": _percentiles(lat),
        }
        for i, lat, elapsed, _ in got
    ]
    every = [x for _, lat, _, _ in got for x in lat]
    wall = max(elapsed for _, _, elapsed, _ in got)
    p50s = [s["latency_ms"]["p50"] for s in per_stream]
    p95s = [s["latency_ms"]["p95"] for s in per_stream]
    return {
        "streams": streams,
        "transport": transport,
        "faces_per_request": faces,
        "seconds": round(wall, 2),
        "requests": len(every),
        "faces_per_s": round(len(every) * faces / wall, 2),
        "latency_ms_all_requests": _percentiles(every),
        "latency_ms_per_stream": {
            "p50": {"min": min(p50s), "median": statistics.median(p50s), "max": max(p50s)},
            "p95": {"min": min(p95s), "median": statistics.median(p95s), "max": max(p95s)},
        },
        "per_stream": per_stream,
        "server": {
            "faces_executed": inferences,
            "executions": executions,
            "mean_batch_faces": round(inferences / executions, 2) if executions else None,
            "mean_queue_ms_per_request": round((after[3] - before[3]) / max(requests, 1) / 1e6, 2),
            "mean_batch_compute_ms": round((after[4] - before[4]) / max(requests, 1) / 1e6, 2),
        },
        "load_avg_1min_before": round(load_before, 2),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
    }


def run_local(onnx: Path, faces: int, seconds: float) -> dict[str, Any]:
    """The baseline: the same requests on onnxruntime in this process (default threads), no server."""
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine(onnx, max_batch=faces)
    feeds = _feeds(engine.inputs, faces, _FIRST_SEED)
    engine.warmup(faces)
    latencies, elapsed = _run_for(engine, feeds, seconds)
    return {
        "streams": 1,
        "transport": "in-process onnxruntime, no server",
        "faces_per_request": faces,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "faces_per_s": round(len(latencies) * faces / elapsed, 2),
        "latency_ms_all_requests": _percentiles(latencies),
    }


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (streams, transport): the median over rounds of faces/s and of the per-stream p50/p95."""
    keys = sorted(
        {(r["streams"], r["transport"]) for r in rows},
        key=lambda k: (k[1] != "in-process onnxruntime, no server", k),
    )
    out = []
    for streams, transport in keys:
        same = [r for r in rows if (r["streams"], r["transport"]) == (streams, transport)]
        entry: dict[str, Any] = {
            "streams": streams,
            "transport": transport,
            "rounds": len(same),
            "faces_per_s": round(statistics.median(r["faces_per_s"] for r in same), 1),
        }
        if "latency_ms_per_stream" in same[0]:
            entry["stream_p50_ms"] = round(
                statistics.median(r["latency_ms_per_stream"]["p50"]["median"] for r in same), 1
            )
            entry["stream_p95_ms"] = round(
                statistics.median(r["latency_ms_per_stream"]["p95"]["median"] for r in same), 1
            )
            entry["worst_stream_p95_ms"] = round(
                statistics.median(r["latency_ms_per_stream"]["p95"]["max"] for r in same), 1
            )
            entry["server_mean_batch"] = round(
                statistics.median(r["server"]["mean_batch_faces"] or 0 for r in same), 2
            )
        else:
            entry["p50_ms"] = round(statistics.median(r["latency_ms_all_requests"]["p50"] for r in same), 1)
            entry["p95_ms"] = round(statistics.median(r["latency_ms_all_requests"]["p95"] for r in same), 1)
        out.append(entry)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.triton_streams", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--models", type=Path, default=models_dir() / "small")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--transports", nargs="+", choices=TRANSPORTS, default=list(TRANSPORTS))
    p.add_argument("--faces", type=int, default=1, help="face crops per request (faces in a frame)")
    p.add_argument("--seconds", type=float, default=8.0, help="measured time per configuration")
    p.add_argument("--rounds", type=int, default=2, help="passes over the configurations, order alternating")
    p.add_argument("--max-batch", type=int, default=8, help="the server's max_batch_size")
    p.add_argument("--queue-delay-us", type=int, default=500, help="the dynamic batcher's max queue delay")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/triton_streams_cpu.json"))
    p.add_argument("--plot", type=Path, default=None, help="default: the JSON path with .png")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging()
    from engines.triton_repo import RepoConfig, write_repository
    from engines.triton_server import TritonServer

    onnx = args.models / "generator.onnx"
    configs = [(n, t) for n in args.streams for t in args.transports]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="triton-streams-") as tmp:
        repo_config = RepoConfig(
            max_batch=args.max_batch, queue_delay_us=args.queue_delay_us, python_backend=True
        )
        write_repository(args.models, Path(tmp) / "repo", config=repo_config)
        with TritonServer(Path(tmp) / "repo", startup_timeout_s=120) as server:
            for r in range(args.rounds):
                rows.append({"round": r, **run_local(onnx, args.faces, args.seconds)})
                log.info("round %d: no server: %.1f faces/s", r, rows[-1]["faces_per_s"])
                for streams, transport in configs if r % 2 == 0 else configs[::-1]:
                    row = run_streams(server.url, onnx, streams, args.faces, args.seconds, transport)
                    rows.append({"round": r, **row})
                    log.info(
                        "round %d: %2d streams over %s: %.1f faces/s, per-stream p50 %.1f / p95 %.1f ms, server batch %.2f",
                        r,
                        streams,
                        transport,
                        row["faces_per_s"],
                        row["latency_ms_per_stream"]["p50"]["median"],
                        row["latency_ms_per_stream"]["p95"]["median"],
                        row["server"]["mean_batch_faces"] or 0,
                    )
    from engines.metadata import read_onnx_info

    info = read_onnx_info(onnx)
    report = {
        "benchmark": "triton_streams",
        "git_revision": git("rev-parse", "HEAD"),
        "device": {
            **device_info("cpu"),
            "note": "server and every client on this one shared CPU; the server's model is Triton's Python "
            "backend running generator.onnx with onnxruntime (CPU), the stand-in for the onnxruntime_onnx "
            "backend that the nvidia-pytriton tritonserver lacks",
        },
        "server": {
            "tritonserver": "2.51.0 (bundled in nvidia-pytriton 0.7.0, .venv-triton)",
            "model": "generator (python backend, onnxruntime CPU, default threads, 1 instance)",
            "max_batch_size": args.max_batch,
            "dynamic_batching_max_queue_delay_us": args.queue_delay_us,
        },
        "client": "one spawned process per stream, each with its own TritonEngine (tritonclient.http)",
        "model": {"profile": info.profile, "crop_size": info.crop_size, "role": info.role},
        "faces_per_request": args.faces,
        "seconds_per_config": args.seconds,
        "versions": {**versions(), "tritonclient": _dist_version("tritonclient")},
        "summary": _summary(rows),
        "rows": rows,
    }
    write_report(report, args.json)
    plot = args.plot or args.json.with_suffix(".png")
    try:
        from benchmarks.plots import plot_streams

        plot_streams(report, plot)
    except ImportError as exc:  # matplotlib is the bench extra
        log.warning("no plot (%s)", exc)
    log.info("wrote %s and %s", args.json, plot)
    return 0


def _dist_version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
