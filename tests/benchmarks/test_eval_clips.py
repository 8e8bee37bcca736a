from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.baselines import grow
from benchmarks.clip_io import GroundTruth, read_frames
from benchmarks.eval_clips import EvalClipsConfig, StillSource, VideoSource, build, held_out_sources
from benchmarks.eval_compose import Framing, cover_matrix, framing_matrix, occlude
from engines.assets import demo_clip
from engines.crop import template

DEMO = demo_clip()


def test_framing_puts_the_face_box_where_asked_and_stays_inside_the_photo() -> None:
    framing = Framing(size=(640, 480), face_width_px=200, centre=(0.5, 0.5))
    m = framing_matrix((2000, 3000), np.array([1400.0, 900.0, 100.0, 120.0]), framing)
    assert m[0, 0] == pytest.approx(2.0)
    assert m[0, 0] * 1450 + m[0, 2] == pytest.approx(320) and m[1, 1] * 960 + m[1, 2] == pytest.approx(240)
    # A face at the photo's corner: the window shifts to stay inside instead of showing border.
    m = framing_matrix((2000, 3000), np.array([0.0, 0.0, 100.0, 120.0]), framing)
    assert m[0, 2] == 0.0 and m[1, 2] == 0.0
    c = cover_matrix((540, 960), (480.0, 270.0), (640, 480))
    assert c[0, 0] == pytest.approx(480 / 540) and c[1, 2] == pytest.approx(0.0)


def test_occlude_is_deterministic_and_only_touches_its_alpha() -> None:
    frame = read_frames(DEMO)[0]
    lm = template(256) * 0.6 + np.array([150.0, 60.0])
    a, alpha_a = occlude(frame, lm, "sunglasses", np.random.default_rng(3))
    b, alpha_b = occlude(frame, lm, "sunglasses", np.random.default_rng(3))
    assert np.array_equal(a, b) and np.array_equal(alpha_a, alpha_b)
    assert (alpha_a >= 0.5).mean() > 0.005
    assert np.array_equal(a[alpha_a == 0], frame[alpha_a == 0])
    with pytest.raises(ValueError, match="occluder kind"):
        occlude(frame, lm, "balaclava", np.random.default_rng(0))


def test_build_tiny_eval_set_from_the_bundled_clip(tmp_path: Path) -> None:
    frames = read_frames(DEMO)
    stills = []
    for i in (0, len(frames) // 2):
        path = tmp_path / f"still{i}.png"
        cv2.imwrite(str(path), frames[i])
        stills.append(StillSource(path, f"person{i}"))
    cfg = EvalClipsConfig(
        out=tmp_path / "clips",
        stills=tuple(stills),
        video=VideoSource(DEMO, "demo"),
        framing=Framing(size=(320, 240), face_width_px=100),
        hold=2,
        bare_hold=3,
        talking_frames=10,
        kinds=("facemask_photo", "hand"),
    )
    index = build(cfg)
    names = [c["name"] for c in index["clips"]]
    assert names == [
        "stills_facemask_photo",
        "stills_hand",
        "talking_facemask_photo",
        "bare_talking",
        "bare_stills_motion",
    ]
    assert json.loads((cfg.out / "index.json").read_text())["clips"][0]["frames"] == 4
    by_name = {c["name"]: c for c in index["clips"]}
    for name in ("stills_facemask_photo", "talking_facemask_photo"):
        clip = by_name[name]
        masked = read_frames(cfg.out / clip["files"]["input"])
        clean = read_frames(cfg.out / clip["files"]["clean"])
        truth = GroundTruth.load(cfg.out / clip["files"]["truth"])
        assert masked.shape == clean.shape == (clip["frames"], 240, 320, 3) == (*truth.masks.shape, 3)
        assert truth.masks.mean(axis=(1, 2)).min() > 0.01  # an occluder on every frame
        for t in range(truth.frames):
            outside = ~grow(truth.masks[t], 3)
            # Lossless coding: away from the occluder the masked clip is the clean clip (chroma rounding).
            assert np.abs(masked[t][outside].astype(int) - clean[t][outside]).max() <= 2
            inside = truth.masks[t]
            assert np.abs(masked[t][inside].astype(int) - clean[t][inside]).mean() > 5
    assert by_name["talking_facemask_photo"]["frames"] == 10
    bare = by_name["bare_stills_motion"]
    assert "clean" not in bare["files"] and bare["frames"] == 6
    bare_frames = read_frames(cfg.out / bare["files"]["input"])
    assert np.abs(bare_frames[1].astype(int) - bare_frames[0]).mean() > 0.5  # the camera moves
    assert not GroundTruth.load(cfg.out / bare["files"]["truth"]).masks.any()


def test_held_out_sources_follow_the_training_split(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "faces").mkdir(parents=True)
    rows = ["crop_file,source_package,package_version,source_path,frame_index,face_box,person_hint"]
    for i in range(20):
        rel = f"p{i}.png" if i % 5 else f"v{i}.mp4"
        src = root / "sources" / "pypi__pkg__1.0" / rel
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(b"x")
        rows.append(f"c{i}.png,pypi:pkg,1.0,{rel},{'' if i % 5 else 0},1 2 30 40,person{i}")
    (root / "faces" / "manifest.csv").write_text("\n".join(rows) + "\n")
    stills, videos, info = held_out_sources(root / "faces" / "manifest.csv")
    held = set(info["val_people"])
    assert held and len(held) < 20
    assert {s.person for s in stills} | {v.person for v in videos} == held
    assert all(s.box_xywh == (1.0, 2.0, 30.0, 40.0) for s in stills)
