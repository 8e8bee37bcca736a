"""Evaluation clips of held-out people for measuring the whole product (issues 11 and 12).

    python -m benchmarks.eval_clips --out data/eval_clips [--seed 0] [--manifest ../shared/data/faces/manifest.csv]

People: the validation side of ``training.data.faces.split_by_person(manifest, 0.15, seed=0)``, the split
every training config uses (``holdout_fraction`` 0.15, ``split_seed`` 0). Clips (640x480, 30 fps,
lossless H.264, see :mod:`benchmarks.clip_io`), one folder each with ``input.mp4``, ``clean.mp4`` (masked
clips only; a bare clip's input is its own truth) and ``truth.npz`` (:class:`benchmarks.clip_io.GroundTruth`):

- ``stills_<occluder>``: every held-out still photo framed like a webcam face (~200 px wide), held
  ``--hold`` frames, one occluder per photo; ``facemask_photo`` (real mask photographs: the style the
  training never saw) and one clip per other kind (scarf, sunglasses, hand, free-form).
- ``talking_facemask_photo``: a real video of a held-out person, cut to 4:3 around the face, with a
  photo face-mask that follows the face (smoothed landmarks, the same mask in every frame: the
  approach of :mod:`training.data.demo_clip`). A video shorter than ``--talking-frames`` is played
  forward then backward (recorded as ``ping_pong``). Without a held-out video, the clip is made of the
  stills with synthetic camera motion and is named ``talking_synthetic_motion_facemask_photo``.
- ``bare_talking`` (the same video, nothing on the face) and ``bare_stills_motion`` (the stills with a
  small synthetic hand-held camera motion and zoom): false positives on unoccluded faces.

``index.json`` lists the clips, who is in them, where every frame came from, and the settings. Same
inputs and seed, same pixels.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.clip_io import GroundTruth, VideoWriter
from benchmarks.environment import git, versions
from benchmarks.eval_compose import (
    MASK_THRESHOLD,
    OCCLUDERS,
    FaceFinder,
    Framing,
    camera_motion,
    compose,
    cover_matrix,
    face_matrix,
    framing_matrix,
    map_points,
    occlude,
    then,
)
from benchmarks.report import setup_logging, write_report
from training.data.faces import VIDEO_EXTS, iter_video_frames, read_manifest, split_by_person

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = REPO_ROOT.parent / "shared" / "data" / "faces" / "manifest.csv"
HOLDOUT_FRACTION, SPLIT_SEED = 0.15, 0  # training/configs/*.yaml: holdout_fraction, split_seed
HELD_OUT_STYLE = "facemask_photo"
LANDMARK_SMOOTHING = 0.6  # training.data.demo_clip: a worn mask does not jitter with detector noise
MOTION_PERIOD = 48  # frames per cycle of the synthetic camera motion


class EvalClipsError(ValueError):
    """The face sources are missing, empty or unusable."""


@dataclass(frozen=True)
class StillSource:
    """A photo of one person; ``box_xywh`` picks the face (source pixels), None = the largest face."""

    path: Path
    person: str
    box_xywh: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class VideoSource:
    path: Path
    person: str


@dataclass(frozen=True)
class EvalClipsConfig:
    """What to build. ``hold``: frames each still is shown (masked stills); ``bare_hold`` the same for the
    bare stills clip (longer, so the camera motion shows); ``talking_frames``: target length of the
    video clips; ``kinds``: occluders of the stills clips (``facemask_photo`` first)."""

    out: Path
    stills: tuple[StillSource, ...]
    video: VideoSource | None
    seed: int = 0
    framing: Framing = field(default_factory=Framing)
    fps: int = 30
    hold: int = 8
    bare_hold: int = 12
    talking_frames: int = 142
    kinds: tuple[str, ...] = tuple(OCCLUDERS)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.stills:
            raise EvalClipsError("need at least one still photo of a held-out person")
        bad = [k for k in self.kinds if k not in OCCLUDERS]
        if bad or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {tuple(OCCLUDERS)}, got {self.kinds}")
        for name in ("fps", "hold", "bare_hold", "talking_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class _ClipOut:
    """Frames of one clip as they are built; written by :func:`_write_clip`."""

    inputs: list[np.ndarray] = field(default_factory=list)
    cleans: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)
    matrices: list[np.ndarray] = field(default_factory=list)

    def add(self, inp: np.ndarray, clean: np.ndarray, mask: np.ndarray, seg: int, mat: np.ndarray) -> None:
        self.inputs.append(inp)
        self.cleans.append(clean)
        self.masks.append(mask)
        self.segments.append(seg)
        self.matrices.append(mat)


# ----------------------------------------------------------------------------------------- sources
def held_out_sources(manifest: Path) -> tuple[list[StillSource], list[VideoSource], dict[str, Any]]:
    """Still photos and videos of the held-out people (val side of the training split), sorted by path.

    Sources resolve as ``<manifest dir>/../sources/<registry>__<package>__<version>/<source_path>``;
    a row whose source is missing is skipped with one logged line.
    """
    rows = read_manifest(manifest)
    split = split_by_person(rows, HOLDOUT_FRACTION, seed=SPLIT_SEED)
    root = manifest.parent.parent / "sources"
    stills: dict[Path, StillSource] = {}
    video_rows: dict[Path, int] = {}
    video_person: dict[Path, str] = {}
    missing = []
    for row in split.val:
        registry, _, name = row.get("source_package", "").partition(":")
        path = root / f"{registry}__{name}__{row.get('package_version', '')}" / row.get("source_path", "")
        if not path.is_file():
            missing.append(str(path))
            continue
        if path.suffix.lower() in VIDEO_EXTS:
            video_rows[path] = video_rows.get(path, 0) + 1
            video_person[path] = row["person_hint"]
            continue
        parts = row.get("face_box", "").split()
        box = tuple(float(v) for v in parts) if len(parts) == 4 else None
        stills.setdefault(path, StillSource(path, row["person_hint"], box))  # type: ignore[arg-type]
    if missing:
        logger.warning(
            "%d held-out manifest rows have no source file and are skipped: %s", len(missing), missing
        )
    # The video with the most held-out rows first: the one the held-out person is best seen in.
    videos = [VideoSource(p, video_person[p]) for p in sorted(video_rows, key=lambda p: (-video_rows[p], p))]
    info = {
        "manifest": str(manifest),
        "holdout_fraction": HOLDOUT_FRACTION,
        "split_seed": SPLIT_SEED,
        "val_people": list(split.val_people),
        "val_rows": len(split.val),
        "train_rows": len(split.train),
    }
    return sorted(stills.values(), key=lambda s: str(s.path)), videos, info


def _read_bgr(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise EvalClipsError(f"cannot read image {path}")
    return bgr


@dataclass(frozen=True)
class _Framed:
    """A still framed like a webcam face: the frame, the map from the source, the face's landmarks."""

    source: StillSource
    frame_bgr_u8: np.ndarray
    matrix: np.ndarray
    landmarks: np.ndarray


def frame_stills(stills: Sequence[StillSource], framing: Framing, finder: FaceFinder) -> list[_Framed]:
    """Each still placed in a ``framing.size`` frame around its face; stills without a findable face are
    skipped with a logged line (YuNet must see the face the product will see)."""
    out = []
    w, h = framing.size
    at = (framing.centre[0] * w, framing.centre[1] * h)
    for still in stills:
        image = _read_bgr(still.path)
        box = still.box_xywh
        if box is None:
            face = finder.nearest(image, (image.shape[1] / 2, image.shape[0] / 2))
            if face is None:
                logger.warning("no face found in %s; skipped", still.path)
                continue
            box = tuple(float(v) for v in face.box)  # type: ignore[assignment]
        m = framing_matrix(image.shape[:2], np.asarray(box), framing)
        frame = compose(image, m, framing.size)
        face = finder.nearest(frame, at)
        if face is None:
            logger.warning("no face found in %s once framed at %dx%d; skipped", still.path, w, h)
            continue
        out.append(_Framed(still, frame, m, face.landmarks.astype(np.float64)))
    if not out:
        raise EvalClipsError("no still photo had a face YuNet could find")
    return out


def video_frames(
    video: VideoSource, size: tuple[int, int], finder: FaceFinder, target: int
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The longest run of frames with a face, cut to ``size``'s aspect around the face and resized;
    played forward then backward when shorter than ``target`` (capped at ``target`` frames)."""
    frames, has_face, centres = [], [], []
    for _, rgb in iter_video_frames(video.path):
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        face = finder.nearest(bgr, (bgr.shape[1] / 2, bgr.shape[0] / 2))
        frames.append(bgr)
        has_face.append(face is not None)
        centres.append(
            None if face is None else (face.box[0] + face.box[2] / 2, face.box[1] + face.box[3] / 2)
        )
    runs, start = [], None
    for i, ok in enumerate([*has_face, False]):
        if ok and start is None:
            start = i
        if not ok and start is not None:
            runs.append((start, i))
            start = None
    if not runs:
        raise EvalClipsError(f"no frame of {video.path} shows a face")
    a, b = max(runs, key=lambda r: r[1] - r[0])
    cx = float(np.median([c[0] for c in centres[a:b] if c is not None]))
    cy = float(np.median([c[1] for c in centres[a:b] if c is not None]))
    m = cover_matrix(frames[a].shape[:2], (cx, cy), size)
    cut = [cv2.warpAffine(f, m, size, flags=cv2.INTER_AREA) for f in frames[a:b]]
    order = list(range(len(cut)))
    ping_pong = len(cut) < target
    while len(order) < target and len(cut) > 1:
        order += list(range(len(cut) - 2, 0, -1)) + list(range(len(cut)))
    order = order[:target]
    info = {
        "video": str(video.path),
        "source_frames": [a, b - 1],
        "ping_pong": ping_pong,
        "cut_to": list(size),
        "frame_order_in_run": order,
    }
    return [cut[i] for i in order], info


# ----------------------------------------------------------------------------------------- clips
def _stills_clip(framed: Sequence[_Framed], kind: str | None, cfg: EvalClipsConfig, motion: bool) -> _ClipOut:
    """Stills held ``hold`` (masked) / ``bare_hold`` (bare) frames; ``motion`` adds the camera motion."""
    out = _ClipOut()
    hold = cfg.bare_hold if kind is None else cfg.hold
    size = cfg.framing.size
    kind_index = -1 if kind is None else tuple(OCCLUDERS).index(kind)
    for i, f in enumerate(framed):
        image = _read_bgr(f.source.path) if motion else None
        for t in range(hold):
            if motion:
                cam = camera_motion(t, MOTION_PERIOD, size, phase=1.7 * i)
                assert image is not None
                clean = compose(image, then(cam, f.matrix), size)
                landmarks = map_points(cam, f.landmarks)
            else:
                clean, landmarks = f.frame_bgr_u8, f.landmarks
            if kind is None:
                out.add(clean, clean, np.zeros(clean.shape[:2], bool), i, face_matrix(landmarks))
                continue
            # One occluder per photo (the same draw in each of its frames): a worn, not a shimmering, one.
            rng = np.random.default_rng([cfg.seed, kind_index, i])
            masked, alpha = occlude(clean, landmarks, kind, rng)
            out.add(masked, clean, alpha >= MASK_THRESHOLD, i, face_matrix(landmarks))
    return out


def _video_clip(
    frames: Sequence[np.ndarray], kind: str | None, cfg: EvalClipsConfig, finder: FaceFinder
) -> _ClipOut:
    """Per frame: YuNet landmarks smoothed over time; ``kind`` painted with the same seed every frame."""
    out = _ClipOut()
    size = cfg.framing.size
    centre = (size[0] / 2, size[1] / 2)
    smoothed: np.ndarray | None = None
    kind_index = -1 if kind is None else tuple(OCCLUDERS).index(kind)
    for frame in frames:
        face = finder.nearest(frame, centre)
        if face is not None:
            lm = face.landmarks.astype(np.float64)
            smoothed = (
                lm if smoothed is None else LANDMARK_SMOOTHING * smoothed + (1 - LANDMARK_SMOOTHING) * lm
            )
        if smoothed is None:
            raise EvalClipsError("the first frame of a talking clip must show a face")
        if kind is None:
            out.add(frame, frame, np.zeros(frame.shape[:2], bool), 0, face_matrix(smoothed))
            continue
        masked, alpha = occlude(frame, smoothed, kind, np.random.default_rng([cfg.seed, kind_index, 10_000]))
        out.add(masked, frame, alpha >= MASK_THRESHOLD, 0, face_matrix(smoothed))
    return out


def _write_clip(folder: Path, clip: _ClipOut, fps: int, bare: bool) -> dict[str, str]:
    h, w = clip.inputs[0].shape[:2]
    files = {"input": "input.mp4", "truth": "truth.npz"}
    with VideoWriter(folder / "input.mp4", w, h, fps) as writer:
        for f in clip.inputs:
            writer.write(f)
    if not bare:
        files["clean"] = "clean.mp4"
        with VideoWriter(folder / "clean.mp4", w, h, fps) as writer:
            for f in clip.cleans:
                writer.write(f)
    GroundTruth(
        masks=np.stack(clip.masks),
        segments=np.asarray(clip.segments, np.int32),
        face_matrices=np.stack(clip.matrices).astype(np.float64),
    ).save(folder / "truth.npz")
    return {k: f"{folder.name}/{v}" for k, v in files.items()}


def _record(name: str, clip: _ClipOut, cfg: EvalClipsConfig, **fields: Any) -> dict[str, Any]:
    files = _write_clip(cfg.out / name, clip, cfg.fps, fields["kind"] == "bare")
    masks = np.stack(clip.masks)
    logger.info(
        "%s: %d frames, mask %.2f %% of the frame on average", name, len(clip.inputs), 100 * masks.mean()
    )
    return {
        "name": name,
        **fields,
        "frames": len(clip.inputs),
        "fps": cfg.fps,
        "size": list(cfg.framing.size),
        "mask_fraction_mean": float(masks.mean()),
        "segments": len(set(clip.segments)),
        "files": files,
    }


def build(cfg: EvalClipsConfig) -> dict[str, Any]:
    """Writes every clip and ``index.json`` under ``cfg.out``; returns the index."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    finder = FaceFinder()
    framed = frame_stills(cfg.stills, cfg.framing, finder)
    people = sorted({f.source.person for f in framed})
    still_files = [str(f.source.path) for f in framed]
    clips = []
    for kind in cfg.kinds:
        clips.append(_record(
            f"stills_{kind}", _stills_clip(framed, kind, cfg, motion=False), cfg, kind="masked",
            source="stills", occluder=kind, held_out_style=kind == HELD_OUT_STYLE, people=people,
            stills=still_files, hold_frames=cfg.hold,
        ))  # fmt: skip
    talking_kind = HELD_OUT_STYLE if HELD_OUT_STYLE in cfg.kinds else cfg.kinds[0]
    if cfg.video is not None:
        frames, vinfo = video_frames(cfg.video, cfg.framing.size, finder, cfg.talking_frames)
        video_clips: tuple[tuple[str | None, str], ...] = (
            (talking_kind, f"talking_{talking_kind}"),
            (None, "bare_talking"),
        )
        for occluder, name in video_clips:
            clips.append(_record(
                name, _video_clip(frames, occluder, cfg, finder), cfg, kind="masked" if occluder else "bare",
                source="video", occluder=occluder, people=[cfg.video.person], **vinfo,
            ))  # fmt: skip
    else:
        logger.warning(
            "no held-out person has a video: the talking clip is made of stills with synthetic motion"
        )
        clips.append(_record(
            f"talking_synthetic_motion_{talking_kind}", _stills_clip(framed, talking_kind, cfg, motion=True),
            cfg, kind="masked", source="stills_synthetic_motion", occluder=talking_kind, people=people,
            stills=still_files, hold_frames=cfg.hold,
        ))  # fmt: skip
        clips.append(_record(
            "bare_stills_static", _stills_clip(framed, None, cfg, motion=False), cfg, kind="bare",
            source="stills", occluder=None, people=people, stills=still_files, hold_frames=cfg.bare_hold,
        ))  # fmt: skip
    clips.append(_record(
        "bare_stills_motion", _stills_clip(framed, None, cfg, motion=True), cfg, kind="bare",
        source="stills_synthetic_motion", occluder=None, people=people, stills=still_files,
        hold_frames=cfg.bare_hold,
    ))  # fmt: skip
    index = {
        "clips": clips,
        "seed": cfg.seed,
        "framing": asdict(cfg.framing),
        "held_out": dict(cfg.provenance),
        "mask_threshold": MASK_THRESHOLD,
        "encoding": "libx264 qp 0 (lossless), yuv420p, BT.709 tags",
        "git_revision": git("rev-parse", "HEAD"),
        "versions": versions(),
    }
    write_report(index, cfg.out / "index.json")
    return index


def load_index(folder: Path) -> dict[str, Any]:
    """The ``index.json`` of a folder made by :func:`build`."""
    import json

    path = folder / "index.json"
    if not path.is_file():
        raise EvalClipsError(f"no index.json in {folder} (make it with python -m benchmarks.eval_clips)")
    index: dict[str, Any] = json.loads(path.read_text())
    return index


def iter_clips(index: Mapping[str, Any], folder: Path) -> Iterator[tuple[dict[str, Any], dict[str, Path]]]:
    """(clip record, absolute file paths) of every clip in an index."""
    for clip in index["clips"]:
        yield clip, {k: folder / v for k, v in clip["files"].items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_clips", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the clips and index.json")
    p.add_argument(
        "--manifest", type=Path, default=DEFAULT_MANIFEST, help="face manifest (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--hold", type=int, default=8, help="frames each masked still is held (default: %(default)s)"
    )
    p.add_argument(
        "--bare-hold", type=int, default=12, help="frames each bare still is held (default: %(default)s)"
    )
    p.add_argument(
        "--talking-frames", type=int, default=142, help="length of the video clips (default: %(default)s)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        stills, videos, info = held_out_sources(args.manifest)
        if len(videos) > 1:
            logger.info("held-out videos: %s; using %s", [str(v.path) for v in videos], videos[0].path)
        cfg = EvalClipsConfig(
            out=args.out, stills=tuple(stills), video=videos[0] if videos else None, seed=args.seed,
            hold=args.hold, bare_hold=args.bare_hold, talking_frames=args.talking_frames, provenance=info,
        )  # fmt: skip
        index = build(cfg)
    except (EvalClipsError, ValueError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("wrote %d clips to %s", len(index["clips"]), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
