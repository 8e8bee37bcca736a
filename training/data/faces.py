"""Finding and aligning real faces for training and evaluation sets.

Every face goes through the stream pipeline's alignment: YuNet's five landmarks
(:class:`engines.face_detect.YuNetDetector`) -> :func:`engines.crop.estimate_alignment` ->
:func:`engines.crop.warp_to_crop`. Folders of canonical crops can skip detection (``aligned=True``); then
the landmarks are taken to be the template's.

People: a folder whose images sit in sub-folders takes each sub-folder as one person; a flat folder
takes each file as its own person; a video is one person; a manifest names people in ``person_hint``.
Splits are made by person, never by frame (:func:`split_by_person`).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.crop import estimate_alignment, template, warp_to_crop
from engines.face_detect import FaceDetection, FaceDetectorConfig, YuNetDetector

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})


# Datasets are built offline, so detection runs at up to 1024 px for precise landmarks on small faces in
# large photos; the landmarks then go through the same alignment function as in the stream pipeline.
DATASET_DETECTOR = FaceDetectorConfig(max_side=1024)


class FaceDataError(ValueError):
    """A face source (folder, manifest, video) is missing, empty or malformed."""


@dataclass(frozen=True)
class AlignedFace:
    """One canonical crop: ``rgb_u8`` (S, S, 3) uint8 RGB, ``landmarks`` (5, 2) float64 crop pixels."""

    rgb_u8: np.ndarray
    landmarks: np.ndarray
    person: str
    source: str

    def __post_init__(self) -> None:
        s = self.rgb_u8.shape[0]
        if self.rgb_u8.shape != (s, s, 3) or self.rgb_u8.dtype != np.uint8:
            raise ValueError(f"rgb_u8 must be (S, S, 3) uint8, got {self.rgb_u8.shape} {self.rgb_u8.dtype}")
        if np.asarray(self.landmarks).shape != (5, 2):
            raise ValueError(f"landmarks must be (5, 2), got {np.asarray(self.landmarks).shape}")


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file; FaceDataError if unreadable."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FaceDataError(f"cannot read image {path}")
    return np.ascontiguousarray(bgr[..., ::-1])


def resize_square(rgb_u8: np.ndarray, size: int) -> np.ndarray:
    """Resize a square crop to ``size`` (area filter when shrinking)."""
    if rgb_u8.shape[:2] == (size, size):
        return rgb_u8
    shrink = max(rgb_u8.shape[:2]) > size
    return cv2.resize(rgb_u8, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _iou(a_xywh: np.ndarray, b_xywh: np.ndarray) -> float:
    ax0, ay0, aw, ah = a_xywh
    bx0, by0, bw, bh = b_xywh
    iw = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


class FaceAligner:
    """Detects faces with YuNet and warps one into the canonical S x S crop. Not thread-safe.

    Faces whose eyes are less than ``min_eye_distance_px`` apart in the source are skipped: a crop blown
    up from a thumbnail teaches the restorer blur.
    """

    def __init__(
        self,
        crop_size: int,
        detector_config: FaceDetectorConfig | None = None,
        min_eye_distance_px: float = 16.0,
    ) -> None:
        template(crop_size)  # validates the size
        self.crop_size = crop_size
        self.min_eye_distance_px = min_eye_distance_px
        self.detector = YuNetDetector(detector_config or DATASET_DETECTOR)

    def align(
        self, rgb_u8: np.ndarray, person: str, source: str, box_hint: np.ndarray | None = None
    ) -> AlignedFace | None:
        """The largest face (or the one overlapping ``box_hint`` x, y, w, h best), or None if none found."""
        faces = self.detector.detect(np.ascontiguousarray(rgb_u8[..., ::-1]))
        if not faces:
            return None
        face: FaceDetection = faces[0]
        if box_hint is not None:
            scored = sorted(faces, key=lambda f: -_iou(f.box, box_hint))
            if _iou(scored[0].box, box_hint) < 0.3:
                return None
            face = scored[0]
        if float(np.linalg.norm(face.landmarks[1] - face.landmarks[0])) < self.min_eye_distance_px:
            return None
        return self.align_with(rgb_u8, face.landmarks, person, source)

    def align_with(
        self, rgb_u8: np.ndarray, landmarks_xy: np.ndarray, person: str, source: str
    ) -> AlignedFace:
        alignment = estimate_alignment(landmarks_xy, self.crop_size)
        crop = warp_to_crop(np.ascontiguousarray(rgb_u8), alignment)
        return AlignedFace(crop, alignment.to_crop(landmarks_xy), person, source)


def aligned_crop_face(path: Path, crop_size: int, person: str) -> AlignedFace:
    """A file that already is a canonical crop (any square size): resized, template landmarks."""
    rgb = read_rgb(path)
    if rgb.shape[0] != rgb.shape[1]:
        raise FaceDataError(f"aligned crops must be square, {path} is {rgb.shape[1]}x{rgb.shape[0]}")
    return AlignedFace(resize_square(rgb, crop_size), template(crop_size), person, str(path))


def iter_video_frames(
    path: str | Path, every_n: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, (H, W, 3) uint8 RGB) of every ``every_n``-th decoded frame, via PyAV."""
    import av  # lazy: only video sources need it

    if every_n < 1:
        raise ValueError(f"every_n must be >= 1, got {every_n}")
    taken = 0
    try:
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index % every_n:
                    continue
                yield index, frame.to_ndarray(format="rgb24")
                taken += 1
                if max_frames is not None and taken >= max_frames:
                    return
    except av.error.FFmpegError as exc:
        raise FaceDataError(f"cannot decode video {path}: {exc}") from exc


def list_media(root: Path) -> list[tuple[Path, str]]:
    """(file, person) for every image and video under ``root`` (recursively, sorted)."""
    if not root.is_dir():
        raise FaceDataError(f"face folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
    nested = any(p.parent != root for p in files)
    return [(p, p.relative_to(root).parts[0] if nested and p.parent != root else p.stem) for p in files]


def load_faces(
    files: Iterable[tuple[Path, str]],
    crop_size: int,
    *,
    aligned: bool = False,
    every_n: int = 8,
    max_frames_per_video: int | None = 60,
    detector_config: FaceDetectorConfig | None = None,
) -> list[AlignedFace]:
    """Aligned faces of images and videos (largest face per image / sampled frame)."""
    aligner = None if aligned else FaceAligner(crop_size, detector_config)
    faces: list[AlignedFace] = []
    missed = 0
    for path, person in files:
        if path.suffix.lower() in VIDEO_EXTS:
            if aligned:
                raise FaceDataError(f"aligned=True takes image crops, not videos: {path}")
            for index, rgb in iter_video_frames(path, every_n):
                assert aligner is not None
                face = aligner.align(rgb, person, f"{path}#{index}")
                faces += [face] if face is not None else []
                missed += face is None
                if (
                    max_frames_per_video is not None
                    and sum(f.source.startswith(f"{path}#") for f in faces) >= max_frames_per_video
                ):
                    break
        elif aligned:
            faces.append(aligned_crop_face(path, crop_size, person))
        else:
            assert aligner is not None
            face = aligner.align(read_rgb(path), person, str(path))
            faces += [face] if face is not None else []
            missed += face is None
    if missed:
        log.info("no face found in %d images/frames; they are skipped", missed)
    return faces


# ------------------------------------------------------------------------------------------ manifests
def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a face manifest CSV (needs ``crop_file`` and ``person_hint`` columns)."""
    p = Path(path)
    if not p.is_file():
        raise FaceDataError(f"manifest not found: {p}")
    with p.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise FaceDataError(f"manifest {p} has no rows")
    missing = {"crop_file", "person_hint"} - set(rows[0])
    if missing:
        raise FaceDataError(f"manifest {p} lacks columns {sorted(missing)} (has {sorted(rows[0])})")
    return rows


@dataclass(frozen=True)
class PersonSplit:
    """Records split by person: nobody appears in both ``train`` and ``val``."""

    train: tuple[Mapping[str, str], ...]
    val: tuple[Mapping[str, str], ...]
    train_people: tuple[str, ...]
    val_people: tuple[str, ...]

    def select(self, split: str) -> tuple[Mapping[str, str], ...]:
        if split == "train":
            return self.train
        if split == "val":
            return self.val
        if split == "all":
            return self.train + self.val
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")


def _person(row: Mapping[str, str]) -> str:
    person = row.get("person_hint") or row.get("person")
    if not person:
        raise FaceDataError(f"record has no person_hint/person: {dict(row)}")
    return person


def split_by_person(
    manifest_csv_or_records: str | Path | Sequence[Mapping[str, str]], val_fraction: float, seed: int = 0
) -> PersonSplit:
    """Hold out whole people for validation, about ``val_fraction`` of the records, deterministically.

    People are shuffled with ``seed`` and taken into ``val`` while they fit (a person who would push ``val``
    past 1.25x the target, such as a long video, stays in ``train``); at least one person goes to each side
    when there are two or more people and ``val_fraction`` > 0.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    records = (
        read_manifest(manifest_csv_or_records)
        if isinstance(manifest_csv_or_records, str | Path)
        else list(manifest_csv_or_records)
    )
    counts: dict[str, int] = {}
    for row in records:
        counts[_person(row)] = counts.get(_person(row), 0) + 1
    people = sorted(counts)
    order = [people[i] for i in np.random.default_rng(seed).permutation(len(people))]
    target = val_fraction * len(records)
    val_people: list[str] = []
    taken = 0
    if val_fraction > 0 and len(people) >= 2:
        for person in order:
            if taken >= target:
                break
            if taken + counts[person] <= 1.25 * target:
                val_people.append(person)
                taken += counts[person]
        if not val_people:  # everyone is larger than the target: hold out the smallest person
            val_people.append(min(order, key=lambda p: counts[p]))
        if len(val_people) == len(people):
            val_people.pop()
    held = set(val_people)
    return PersonSplit(
        train=tuple(r for r in records if _person(r) not in held),
        val=tuple(r for r in records if _person(r) in held),
        train_people=tuple(p for p in people if p not in held),
        val_people=tuple(sorted(held)),
    )


def _source_path(row: Mapping[str, str], sources_root: Path) -> Path | None:
    pkg, version, rel = (
        row.get("source_package", ""),
        row.get("package_version", ""),
        row.get("source_path", ""),
    )
    if ":" not in pkg or not rel:
        return None
    registry, name = pkg.split(":", 1)
    path = sources_root / f"{registry}__{name}__{version}" / rel
    return path if path.is_file() else None


def load_manifest_faces(
    manifest_csv: str | Path,
    records: Sequence[Mapping[str, str]],
    crop_size: int,
    *,
    use_sources: bool = True,
    detector_config: FaceDetectorConfig | None = None,
) -> list[AlignedFace]:
    """Aligned faces of manifest records, re-aligned with this project's alignment.

    With ``use_sources`` each face is detected again in its source photo or video frame (the manifest's
    ``face_box`` picks the face) under ``<manifest dir>/../sources``; otherwise, or where the source is
    missing, YuNet runs on the stored crop (``crops/`` or ``crops_lowres/``), which is itself a face photo.
    """
    manifest = Path(manifest_csv)
    crops_dir = manifest.parent / ("crops" + manifest.stem.removeprefix("manifest"))
    sources_root = manifest.parent.parent / "sources"
    aligner = FaceAligner(crop_size, detector_config)
    faces: list[AlignedFace] = []
    fallbacks = missed = 0
    by_video: dict[Path, list[Mapping[str, str]]] = {}
    for row in records:
        src = _source_path(row, sources_root) if use_sources else None
        if src is not None and src.suffix.lower() in VIDEO_EXTS and row.get("frame_index", "").strip():
            by_video.setdefault(src, []).append(row)
            continue
        face = None
        if src is not None:
            face = aligner.align(read_rgb(src), _person(row), str(src), _box(row))
        if face is None:
            fallbacks += src is not None or use_sources
            crop = crops_dir / row["crop_file"]
            face = aligner.align(read_rgb(crop), _person(row), str(crop)) if crop.is_file() else None
        faces += [face] if face is not None else []
        missed += face is None
    for video, rows in by_video.items():
        wanted = {int(r["frame_index"]): r for r in rows}
        last = max(wanted)
        for index, rgb in iter_video_frames(video):
            if index in wanted:
                row = wanted[index]
                face = aligner.align(rgb, _person(row), f"{video}#{index}", _box(row))
                faces += [face] if face is not None else []
                missed += face is None
            if index >= last:
                break
    if fallbacks:
        log.info(
            "%d manifest faces were aligned from their stored crops (source missing or face not re-found)",
            fallbacks,
        )
    if missed:
        log.info("%d manifest faces could not be aligned and are skipped", missed)
    return faces


def _box(row: Mapping[str, str]) -> np.ndarray | None:
    parts = row.get("face_box", "").split()
    return np.array([float(x) for x in parts]) if len(parts) == 4 else None
