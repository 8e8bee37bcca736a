"""Assembles a run: source -> restore stage -> sink, from one validated :class:`StreamConfig`.

``run_stream.py`` (the CLI) and ``benchmarks.latency`` both build their runs here, so what is measured
is what users run.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.assets import demo_clip, models_dir
from engines.base import Engine
from engines.face_detect import FaceDetectorConfig, YuNetDetector
from engines.select import BACKENDS, load_engine
from stream.faces.tracker import TrackerConfig
from stream.media.sinks import open_sink
from stream.media.sources import Source, open_source
from stream.pipeline import FunctionStage, Pipeline, Stage
from stream.restore.gpu_processor import GpuFrameProcessor, LocateAhead, build_processor
from stream.restore.processor import FrameReport, ProcessorConfig
from stream.restore.smoother import SmootherConfig
from stream.stats import PipelineStats, ProgressReporter, ProgressUpdate
from stream.types import Frame

logger = logging.getLogger(__name__)

MODELS_DIR = models_dir()
DEMO_CLIP = demo_clip()
DEFAULT_OUTPUT_DIR = Path("out")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16")


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def check_engine_choices(backend: str, device: str, precision: str) -> None:
    """ValueError naming the valid values when a backend / device / precision option is unknown."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu`` (the fallback is logged)."""
    if device != "auto":
        return device
    if cuda_available():
        return "cuda"
    logger.info("device: auto -> cpu (no CUDA GPU visible to torch)")
    return "cpu"


def default_models_dir(device: str) -> Path:
    """The profile made for the device: ``full`` (256 px, the paper's) on a GPU, ``small`` on a CPU."""
    full, small = MODELS_DIR / "full", MODELS_DIR / "small"
    if device == "cuda":
        if (full / "generator.onnx").is_file():
            return full
        logger.warning("models: no models/full for the GPU; using models/small")
    return small


def smoother_for_crop(crop_size: int) -> SmootherConfig:
    """Mask grow and feather in crop pixels, scaled from the defaults (sized for 256 px crops).

    Why: on a 128 px crop the 256 px defaults (3 px grow + 6 px feather) reach ~7 % of the face beyond the
    detected mask, which carried the blend up to the eyes of the demo face.
    """
    base = SmootherConfig()
    scale = crop_size / 256
    return dataclasses.replace(
        base,
        dilate_px=max(1, round(base.dilate_px * scale)),
        feather_px=max(1, round(base.feather_px * scale)),
    )


def default_output(input_spec: str) -> Path:
    """``out/<input stem>_restored.mp4`` for a file input."""
    stem = Path(input_spec).stem or "output"
    return DEFAULT_OUTPUT_DIR / f"{stem}_restored.mp4"


@dataclass(frozen=True)
class StreamConfig:
    """One run of the stream processor. ``input``: file path, URL or camera index as text.

    ``output``: file path, rtsp://, udp://, srt://, rtmp:// URL, or None (display / benchmark only).
    ``models``: directory holding ``detector.onnx`` and ``generator.onnx`` (None: by device).
    """

    input: str = str(DEMO_CLIP)
    output: str | None = None
    display: bool = False
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    models: Path | None = None
    max_faces: int = 4
    detect_every: int = 1
    queue_size: int = 4
    keep_audio: bool = True
    intra_threads: int | None = None
    null_sink: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_engine_choices(self.backend, self.device, self.precision)
        if not 1 <= self.max_faces <= 64:
            raise ValueError(f"max_faces must be in 1..64, got {self.max_faces}")
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.intra_threads is not None and self.intra_threads < 1:
            raise ValueError(f"intra_threads must be >= 1, got {self.intra_threads}")
        if self.output is not None and not _is_url(self.output) and not _is_url(self.input):
            if Path(self.output).resolve() == Path(self.input).resolve():
                raise ValueError(f"output must differ from the input, got {self.output} for both")


def _is_url(text: str) -> bool:
    return "://" in text


@dataclass
class RunResult:
    """What a finished run did: pipeline stats, where the output went, and per-frame reports."""

    stats: PipelineStats
    output: str | None
    device: str
    backend: str
    models: Path
    reports: list[FrameReport] = field(default_factory=list)
    source_dropped: int = 0


@dataclass
class Engines:
    detector: Engine
    generator: Engine

    def close(self) -> None:
        self.detector.close()
        self.generator.close()


def load_engines(
    models: Path, *, backend: str, device: str, precision: str, max_batch: int, intra_threads: int | None
) -> Engines:
    """Load the detector and generator of a model directory on one backend and device."""
    prec = precision if precision != "auto" else ("fp16" if device == "cuda" else "fp32")
    paths = {role: models / f"{role}.onnx" for role in ("detector", "generator")}
    for role, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(
                f"{role} model not found: {path} (expected detector.onnx and generator.onnx in {models})"
            )
    det = load_engine(
        paths["detector"],
        backend=backend,
        device=device,
        precision=prec,
        max_batch=max_batch,
        intra_threads=intra_threads,
    )
    try:
        gen = load_engine(
            paths["generator"],
            backend=backend,
            device=device,
            precision=prec,
            max_batch=max_batch,
            intra_threads=intra_threads,
        )
    except BaseException:
        det.close()
        raise
    return Engines(det, gen)


class RestoreStage:
    """The pipeline stage that restores faces in a frame; keeps the per-frame reports."""

    name = "restore"

    def __init__(
        self, processor: Callable[[np.ndarray], tuple[np.ndarray, FrameReport]], keep_reports: bool
    ) -> None:
        self._process = processor
        self.keep_reports = keep_reports
        self.reports: list[FrameReport] = []

    def __call__(self, frame: Frame) -> Frame:
        out, report = self._process(frame.bgr_u8)
        if self.keep_reports:
            self.reports.append(report)
        for key, ms in report.timings_ms.items():
            frame.timings[f"restore.{key}"] = ms
        return dataclasses.replace(frame, bgr_u8=out) if out is not frame.bgr_u8 else frame


@dataclass
class OpenRun:
    source: Source
    engines: Engines
    restore: RestoreStage
    stages: list[Stage]
    device: str
    models: Path


@contextmanager
def open_run(config: StreamConfig) -> Iterator[OpenRun]:
    """Opens the source and the engines and builds the processing stages (closed on exit)."""
    device = resolve_device(config.device)
    models = config.models or default_models_dir(device)
    with ExitStack() as stack:
        source = open_source(config.input)
        stack.callback(source.close)
        info = source.info
        engines = load_engines(
            models,
            backend=config.backend,
            device=device,
            precision=config.precision,
            max_batch=config.max_faces,
            intra_threads=config.intra_threads,
        )
        stack.callback(engines.close)
        crop = engines.detector.info.crop_size
        pconf = ProcessorConfig(
            max_faces=config.max_faces,
            detect_every=config.detect_every,
            tracker=TrackerConfig(fps=info.fps),
            smoother=smoother_for_crop(crop),
        )
        face_detector = YuNetDetector(FaceDetectorConfig(max_faces=max(config.max_faces * 2, 8)))
        processor = build_processor(face_detector, engines.detector, engines.generator, pconf, device)
        keep = not info.is_live
        stages: list[Stage]
        if isinstance(processor, GpuFrameProcessor):
            # Two threads on a GPU: frame N+1's detection and upload overlap frame N's restoration.
            processor.warmup((info.height, info.width))
            ahead = LocateAhead(processor, max_pending=config.queue_size + 4)
            restore = RestoreStage(ahead.process, keep_reports=keep)
            stages = [FunctionStage("faces", ahead.locate_stage), FunctionStage(restore.name, restore)]
        else:
            restore = RestoreStage(processor.process, keep_reports=keep)
            stages = [FunctionStage(restore.name, restore)]
        yield OpenRun(source, engines, restore, stages, device, models)


def run(
    config: StreamConfig,
    *,
    stop_event: threading.Event | None = None,
    on_progress: Callable[[ProgressUpdate], None] | None = None,
) -> RunResult:
    """Process ``config.input`` to its outputs until the source ends, ``stop_event`` is set or Ctrl-C.

    Ctrl-C propagates as KeyboardInterrupt after the pipeline has closed the sink (playable file).
    """
    with open_run(config) as opened:
        source, engines, device, models = opened.source, opened.engines, opened.device, opened.models
        info = source.info
        output = config.output
        if output is None and not config.display and not config.null_sink:
            if info.is_live:
                raise ValueError("a live input needs --output (file or stream URL) or --display")
            output = str(default_output(config.input))
        if output is not None and not _is_url(output):
            Path(output).parent.mkdir(parents=True, exist_ok=True)
        audio_from = config.input if (config.keep_audio and info.has_audio and not info.is_live) else None
        stop = stop_event if stop_event is not None else threading.Event()
        # q / Esc in the window stops the whole run, not only the window.
        sink = open_sink(output, info, audio_from=audio_from, display=config.display, on_quit=stop.set)
        reporter = ProgressReporter.for_info(info) if (config.progress and on_progress is None) else None
        logger.info(
            "run: %s (%dx%d @ %.2f fps, %s) -> %s | models %s | %s on %s",
            config.input,
            info.width,
            info.height,
            info.fps,
            "live" if info.is_live else "file",
            output or ("display" if config.display else "null"),
            models,
            engines.generator.backend,
            device,
        )
        pipeline = Pipeline(
            source,
            opened.stages,
            sink,
            queue_size=config.queue_size,
            on_progress=on_progress or reporter,
            stop_event=stop,
        )
        try:
            stats = pipeline.run()
        finally:
            if reporter is not None:
                reporter.close()
        return RunResult(
            stats=stats,
            output=output,
            device=device,
            backend=engines.generator.backend,
            models=models,
            reports=opened.restore.reports,
        )
