"""The command line of deocclude: ``run_stream.py`` and the ``deocclude`` console script both call :func:`main`.

    deocclude                                   # the bundled demo clip -> out/demo_restored.mp4
    deocclude --input clip.mp4 --output out.mp4
    deocclude --input rtsp://host/cam --output rtsp://host:8554/restored
    deocclude --input 0 --display               # webcam 0 in a window

:func:`main` returns the exit status and never exits itself; the callers (``run_stream.py``, the console
script's wrapper) pass it to ``sys.exit``. Everything below raises typed errors that become one line here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    from engines.select import BACKENDS
    from stream.app import DEMO_CLIP, DEVICES, PRECISIONS

    p = argparse.ArgumentParser(
        description="Restore occluded faces in a video file, an RTSP/HTTP stream or a camera.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--input",
        "-i",
        default=str(DEMO_CLIP),
        help="video file, rtsp:// / http(s):// / udp:// URL, or camera index (0, 1, ...)",
    )
    p.add_argument(
        "--output",
        "-o",
        default=None,
        help="output file (.mp4/.mkv), or rtsp:// / udp:// / srt:// / rtmp:// URL; "
        "default for a file input: out/<name>_restored.mp4",
    )
    p.add_argument("--display", action="store_true", help="show the restored video in a window (q/Esc quits)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where the networks run")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="auto: fp16 on CUDA, fp32 on CPU")
    p.add_argument(
        "--models",
        type=Path,
        default=None,
        help="directory with detector.onnx and generator.onnx (default: models/full on a GPU, "
        "models/small on a CPU)",
    )
    p.add_argument("--max-faces", type=int, default=4, help="faces restored per frame (largest first)")
    p.add_argument(
        "--detect-every",
        type=int,
        default=1,
        help="run the face detector every N frames (tracking in between)",
    )
    p.add_argument("--queue-size", type=int, default=4, help="frames buffered between pipeline stages")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per network (default: runtime's)")
    p.add_argument("--no-audio", action="store_true", help="do not copy the input's audio to the output file")
    p.add_argument("--stats-json", type=Path, default=None, help="write run statistics (latency, fps) here")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar / live line")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname).1s %(name)s: %(message)s")
    import json

    from engines.errors import EngineError
    from stream.app import StreamConfig, run
    from stream.errors import StageError, StreamError

    try:
        config = StreamConfig(
            input=args.input,
            output=args.output,
            display=args.display,
            backend=args.backend,
            device=args.device,
            precision=args.precision,
            models=args.models,
            max_faces=args.max_faces,
            detect_every=args.detect_every,
            queue_size=args.queue_size,
            keep_audio=not args.no_audio,
            intra_threads=args.threads,
            progress=not args.quiet,
        )
        result = run(config)
    except KeyboardInterrupt:
        print("interrupted: what was processed so far has been written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StageError as e:
        cause = e.__cause__
        print(f"error: {e}", file=sys.stderr)
        logging.getLogger("deocclude").debug("stage failure", exc_info=cause)
        return EXIT_ERROR
    except (StreamError, EngineError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, ValueError) else EXIT_ERROR

    stats = result.stats
    summary = stats.summary()
    faces = sum(r.masked_faces for r in result.reports)
    print(
        f"done: {stats.frames_out} frames in {stats.wall_s:.1f} s ({stats.fps:.1f} fps), "
        f"{faces} face restorations, dropped {stats.dropped_total}"
        + (f" -> {result.output}" if result.output else ""),
        file=sys.stderr,
    )
    if args.stats_json:
        args.stats_json.parent.mkdir(parents=True, exist_ok=True)
        summary.update(device=result.device, backend=result.backend, models=str(result.models))
        args.stats_json.write_text(json.dumps(summary, indent=2))
    return EXIT_OK
