"""Torch datasets of (occluded, clean, mask) canonical crops.

Every sample is a dict of float32 tensors: ``image`` (3, S, S) occluded RGB in [0, 1], ``target`` (3, S, S)
clean RGB in [0, 1], ``mask`` (1, S, S) in [0, 1] (1 = occluded).

- :class:`FaceFolderDataset`: face photos (and videos) in a folder; faces are detected and aligned once
  (kept in memory), occlusions are synthesised on the fly.
- :class:`ManifestFaceDataset`: the same for one person-level split of a face manifest CSV.
- :class:`VideoFramesDataset`: frames sampled from videos, detected, aligned, synthesised.
- :class:`FMORDataset`: real pairs in the FMOR layout (``A/`` masked, ``B/`` clean, optional ``face-mask/``).
- :class:`MixedTrainingSet`: the training stream over several sources; sample ``k`` is a pure function
  of ``(seed, k)``, so a resumed run sees exactly the samples it would have seen.

``dataset[i]`` is deterministic per index (evaluation, fixed sample grids); ``draw(rng)`` picks a random
item with random occlusion and augmentation (training).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from engines.crop import estimate_alignment, warp_to_crop
from engines.face_detect import FaceDetectorConfig
from training.data.augment import AugmentConfig, augment_pair
from training.data.faces import (
    IMAGE_EXTS,
    AlignedFace,
    FaceAligner,
    FaceDataError,
    list_media,
    load_faces,
    load_manifest_faces,
    read_manifest,
    read_rgb,
    resize_square,
    split_by_person,
)
from training.data.occlusion import SynthesisConfig
from training.data.synth_common import FaceGeometry

log = logging.getLogger(__name__)

Sample = dict[str, torch.Tensor]
INFO_FILE = "info.json"


def to_sample(occluded_rgb_u8: np.ndarray, clean_rgb_u8: np.ndarray, mask_f32: np.ndarray) -> Sample:
    def chw(rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0)

    return {
        "image": chw(occluded_rgb_u8),
        "target": chw(clean_rgb_u8),
        "mask": torch.from_numpy(np.ascontiguousarray(mask_f32, dtype=np.float32)[None]),
    }


class SyntheticOcclusionDataset(Dataset[Sample]):
    """Aligned clean faces + on-the-fly occlusion synthesis (+ augmentation when ``augment`` is set)."""

    def __init__(
        self,
        faces: Sequence[AlignedFace],
        crop_size: int,
        seed: int = 0,
        synthesis: SynthesisConfig | None = None,
        augment: AugmentConfig | None = None,
    ) -> None:
        if not faces:
            raise FaceDataError("no faces: the source gave no detectable, alignable face")
        bad = [f.source for f in faces if f.rgb_u8.shape[0] != crop_size]
        if bad:
            raise ValueError(f"faces must be {crop_size}x{crop_size} crops, got other sizes for {bad[:3]}")
        self.faces = list(faces)
        self.crop_size = crop_size
        self.seed = seed
        self.synthesis = synthesis or SynthesisConfig()
        self.augment = augment

    @property
    def people(self) -> tuple[str, ...]:
        return tuple(sorted({f.person for f in self.faces}))

    def exclude_people(self, people: set[str]) -> int:
        """Drops the faces of ``people`` (held out for evaluation); returns how many were dropped."""
        kept = [f for f in self.faces if f.person not in people]
        dropped = len(self.faces) - len(kept)
        if not kept:
            raise FaceDataError(
                f"every face of this source belongs to held-out people ({sorted(people)[:5]}...)"
            )
        self.faces = kept
        return dropped

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self.faces):
            raise IndexError(f"index {index} out of range for {len(self.faces)} faces")
        return self.make(index, np.random.default_rng([self.seed, index]))

    def draw(self, rng: np.random.Generator) -> Sample:
        return self.make(int(rng.integers(len(self.faces))), rng)

    def make(self, index: int, rng: np.random.Generator) -> Sample:
        face = self.faces[index]
        geometry = FaceGeometry(self.crop_size, face.landmarks)
        occ = self.synthesis.apply(face.rgb_u8, rng, geometry)
        clean, occluded, mask = face.rgb_u8, occ.image_rgb_u8, occ.mask_f32
        if self.augment is not None:
            clean, occluded, mask = augment_pair(clean, occluded, mask, rng, self.augment)
        return to_sample(occluded, clean, mask)


class FaceFolderDataset(SyntheticOcclusionDataset):
    """Face photos (and videos) from a folder or a list of files, aligned once, occluded on the fly.

    ``aligned=True`` means the images already are canonical crops (any square size; tests use this with
    synthetic faces): no detection, template landmarks. People: sub-folder names, else file stems.
    """

    def __init__(
        self,
        root_or_files: str | Path | Sequence[str | Path],
        crop_size: int,
        seed: int = 0,
        synthesis: SynthesisConfig | None = None,
        augment: AugmentConfig | None = None,
        *,
        aligned: bool = False,
        every_n: int = 8,
        max_frames_per_video: int | None = 60,
        detector_config: FaceDetectorConfig | None = None,
    ) -> None:
        if isinstance(root_or_files, str | Path):
            files = list_media(Path(root_or_files))
        else:
            files = [(Path(p), Path(p).stem) for p in root_or_files]
        if not files:
            raise FaceDataError(f"no images or videos in {root_or_files}")
        faces = load_faces(
            files,
            crop_size,
            aligned=aligned,
            every_n=every_n,
            max_frames_per_video=max_frames_per_video,
            detector_config=detector_config,
        )
        super().__init__(faces, crop_size, seed, synthesis, augment)


class ManifestFaceDataset(SyntheticOcclusionDataset):
    """Faces of one person-level ``split`` ("train", "val", "all") of a face manifest such as
    ``shared/data/faces/manifest.csv``: nobody in "val" is in "train" (:func:`split_by_person` with
    ``holdout_fraction`` and ``split_seed``). ``person_split`` records who is where."""

    def __init__(
        self,
        manifest_csv: str | Path,
        crop_size: int,
        split: str = "train",
        holdout_fraction: float = 0.15,
        split_seed: int = 0,
        seed: int = 0,
        synthesis: SynthesisConfig | None = None,
        augment: AugmentConfig | None = None,
        *,
        use_sources: bool = True,
        detector_config: FaceDetectorConfig | None = None,
    ) -> None:
        self.person_split = split_by_person(read_manifest(manifest_csv), holdout_fraction, split_seed)
        faces = load_manifest_faces(
            manifest_csv,
            self.person_split.select(split),
            crop_size,
            use_sources=use_sources,
            detector_config=detector_config,
        )
        super().__init__(faces, crop_size, seed, synthesis, augment)


class VideoFramesDataset(SyntheticOcclusionDataset):
    """Every ``every_n``-th frame of each video (PyAV), largest face aligned; one person per video."""

    def __init__(
        self,
        video_paths: Sequence[str | Path],
        every_n: int = 8,
        crop_size: int = 256,
        seed: int = 0,
        synthesis: SynthesisConfig | None = None,
        augment: AugmentConfig | None = None,
        *,
        max_frames_per_video: int | None = 60,
        detector_config: FaceDetectorConfig | None = None,
    ) -> None:
        paths = [Path(p) for p in video_paths]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FaceDataError(f"videos not found: {missing}")
        faces = load_faces(
            [(p, p.stem) for p in paths],
            crop_size,
            every_n=every_n,
            max_frames_per_video=max_frames_per_video,
            detector_config=detector_config,
        )
        super().__init__(faces, crop_size, seed, synthesis, augment)


def _read_mask(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise FaceDataError(f"cannot read face-mask {path}")
    return m.astype(np.float32) / 255.0


def difference_mask(
    masked_rgb_u8: np.ndarray, clean_rgb_u8: np.ndarray, threshold: float = 25.0
) -> np.ndarray:
    """(H, W) float32 {0, 1}: where the masked and clean images differ (for pairs without face-mask/)."""
    diff = (
        np.abs(masked_rgb_u8.astype(np.int16) - clean_rgb_u8.astype(np.int16)).max(axis=2).astype(np.float32)
    )
    m = (cv2.GaussianBlur(diff, (3, 3), 0) > threshold).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    return m.astype(np.float32)


class FMORDataset(Dataset[Sample]):
    """Real (masked, clean[, mask]) pairs in the FMOR layout: ``root/A``, ``root/B`` (same names),
    optional ``root/face-mask`` (white = mask; without it the mask is where A and B differ).

    ``aligned``: True = images are canonical crops (resized to ``crop_size``); False = detect the face in
    B (the clean image) and warp A, B and the mask with that one alignment; None = True when
    ``root/info.json`` (written by ``training.data.build``) says the crops are aligned, else False.
    Pairs whose face cannot be found are skipped (logged). Everything is loaded once into memory.
    """

    def __init__(
        self,
        root: str | Path,
        crop_size: int,
        *,
        aligned: bool | None = None,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        detector_config: FaceDetectorConfig | None = None,
    ) -> None:
        self.root = Path(root)
        a_dir, b_dir, m_dir = self.root / "A", self.root / "B", self.root / "face-mask"
        if not a_dir.is_dir() or not b_dir.is_dir():
            raise FaceDataError(f"FMOR layout needs {a_dir} and {b_dir}")
        if aligned is None:
            info = self.root / INFO_FILE
            aligned = bool(json.loads(info.read_text()).get("aligned")) if info.is_file() else False
        names = sorted(p.name for p in a_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not names:
            raise FaceDataError(f"no images in {a_dir}")
        if not m_dir.is_dir():
            log.info("%s has no face-mask/ folder: masks are taken where A and B differ", self.root)
        aligner = None if aligned else FaceAligner(crop_size, detector_config)
        self.items: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]] = []
        skipped = 0
        for name in names:
            b_path = _same_stem(b_dir, name)
            if b_path is None:
                raise FaceDataError(f"{a_dir / name} has no clean counterpart in {b_dir}")
            masked, clean = read_rgb(a_dir / name), read_rgb(b_path)
            if masked.shape != clean.shape:
                raise FaceDataError(f"{a_dir / name} is {masked.shape[:2]} but {b_path} is {clean.shape[:2]}")
            m_path = _same_stem(m_dir, name) if m_dir.is_dir() else None
            mask = _read_mask(m_path) if m_path is not None else difference_mask(masked, clean)
            if mask.shape != masked.shape[:2]:
                mask = cv2.resize(mask, (masked.shape[1], masked.shape[0]), interpolation=cv2.INTER_LINEAR)
            if aligned:
                masked, clean = resize_square(masked, crop_size), resize_square(clean, crop_size)
                mask = np.clip(cv2.resize(mask, (crop_size, crop_size), interpolation=cv2.INTER_AREA), 0, 1)
            else:
                assert aligner is not None
                faces = aligner.detector.detect(np.ascontiguousarray(clean[..., ::-1]))
                if not faces:
                    skipped += 1
                    continue
                alignment = estimate_alignment(faces[0].landmarks, crop_size)
                masked, clean = warp_to_crop(masked, alignment), warp_to_crop(clean, alignment)
                mask = warp_to_crop(mask, alignment)
            self.items.append((masked, clean, mask.astype(np.float32), name))
        if skipped:
            log.info("%s: no face found in %d clean images; those pairs are skipped", self.root, skipped)
        if not self.items:
            raise FaceDataError(f"{self.root}: no usable pairs")
        self.crop_size = crop_size
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(item[3] for item in self.items)

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self.items):
            raise IndexError(f"index {index} out of range for {len(self.items)} pairs")
        return self.make(index, np.random.default_rng([self.seed, index]))

    def draw(self, rng: np.random.Generator) -> Sample:
        return self.make(int(rng.integers(len(self.items))), rng)

    def make(self, index: int, rng: np.random.Generator) -> Sample:
        masked, clean, mask, _ = self.items[index]
        if self.augment is not None:
            clean, masked, mask = augment_pair(clean, masked, mask, rng, self.augment)
        return to_sample(masked, clean, mask)


def _same_stem(folder: Path, name: str) -> Path | None:
    exact = folder / name
    if exact.is_file():
        return exact
    for cand in sorted(folder.glob(Path(name).stem + ".*")):
        if cand.suffix.lower() in IMAGE_EXTS:
            return cand
    return None


class MixedTrainingSet(Dataset[Sample]):
    """The training stream: sample ``k`` picks a source by ``weights`` and draws from it with
    ``numpy.random.default_rng([seed, k])``. Indices are unbounded (use :class:`StepSampler`)."""

    def __init__(
        self,
        sources: Sequence[SyntheticOcclusionDataset | FMORDataset],
        weights: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        if not sources:
            raise ValueError("MixedTrainingSet needs at least one source")
        w = np.array([float(len(s)) for s in sources] if weights is None else [float(x) for x in weights])
        if len(w) != len(sources) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(
                f"weights must be {len(sources)} non-negative numbers with a positive sum, got {list(w)}"
            )
        self.sources = list(sources)
        self.probabilities = w / w.sum()
        self.seed = seed

    def __len__(self) -> int:
        return 2**62  # virtual: every index is a distinct sample

    def __getitem__(self, k: int) -> Sample:
        rng = np.random.default_rng([self.seed, int(k)])
        source = self.sources[int(rng.choice(len(self.sources), p=self.probabilities))]
        return source.draw(rng)


class StepSampler(Sampler[int]):
    """Yields ``start, start + 1, ..., stop - 1``: the global sample numbers of a (resumed) run."""

    def __init__(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop:
            raise ValueError(f"need 0 <= start <= stop, got {start}, {stop}")
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
