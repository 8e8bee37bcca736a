from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from benchmarks import lpips, product
from benchmarks.eval_clips import EvalClipsConfig, StillSource, build
from benchmarks.eval_compose import Framing
from benchmarks.product_run import parse_done_line
from engines.assets import demo_clip

DEMO = demo_clip()


def test_parse_done_line_takes_the_last_summary() -> None:
    err = "I x: y\ndone: 12 frames in 1.0 s (12.0 fps), 3 face restorations, dropped 0 -> a.mp4\n"
    assert parse_done_line(err) == (12, 3)
    assert parse_done_line("error: cannot open") is None


def _masked(
    psnr_mask: float, face: float, ssim: float, idc: float, ratio: float | None, lpips: float | None = 0.2
) -> dict[str, Any]:
    return {
        "psnr_mask": {"mean": psnr_mask, "p10": psnr_mask - 1, "worst": psnr_mask - 2},
        "psnr_frame": 30.0,
        "psnr_face": face,
        "ssim_face": ssim,
        "id_cosine": idc,
        "lpips": lpips,
        "flicker": {"mean": 1.0},
        "flicker_ratio": ratio,
    }


def test_checks_compare_with_the_issue_targets() -> None:
    report = {
        "clips": {
            "stills_facemask_photo": {
                "kind": "masked",
                "occluder": "facemask_photo",
                "methods": {
                    "product": _masked(25.0, 28.0, 0.90, 0.5, None, lpips=0.10),
                    "telea": _masked(22.5, 27.0, 0.91, 0.6, None, lpips=0.15),
                    "masked_input": _masked(10.0, 20.0, 0.80, 0.4, None),
                },
            },
            "talking_facemask_photo": {
                "kind": "masked",
                "occluder": "facemask_photo",
                "methods": {
                    "product": _masked(20.0, 28.0, 0.9, 0.5, 1.5),
                    "masked_input": _masked(10.0, 20.0, 0.8, 0.4, 1.0),
                    "telea": _masked(19.0, 27.0, 0.9, 0.5, 1.0),
                },
            },
            "stills_hand": {
                "kind": "masked",
                "occluder": "hand",
                "methods": {"product": _masked(20.0, 1, 1, 1, None), "telea": _masked(19.5, 1, 1, 1, None)},
            },
            "bare_talking": {
                "kind": "bare",
                "product": {"frames_face_untouched_share": 0.995, "altered_share_worst": 0.01},
            },
        }
    }
    got = {c["check"]: c["passed"] for c in product.checks(report)}
    assert got["11: stills_facemask_photo psnr_mask >= Telea + 2 dB"] is True
    assert got["11: stills_facemask_photo face PSNR >= Telea + 0.5 dB"] is True
    assert got["11: stills_facemask_photo face SSIM >= Telea's"] is False
    assert got["11: stills_facemask_photo face LPIPS < Telea's"] is True
    assert got["11: stills_facemask_photo identity > masked input's"] is True
    assert got["11: talking_facemask_photo psnr_mask >= masked input + 9.5 dB"] is True
    assert got["11: talking_facemask_photo flicker <= 1.3x clean"] is False
    assert got["12: stills_hand psnr_mask >= Telea + 1 dB"] is False
    assert got["12: bare_talking frames with no face pixel altered"] is True
    assert got["12: bare_talking worst-frame altered share"] is False
    report["clips"]["stills_facemask_photo"]["methods"]["product"]["lpips"] = None  # LPIPS left out
    got = {c["check"]: c["passed"] for c in product.checks(report)}
    assert got["11: stills_facemask_photo face LPIPS < Telea's"] is None
    lines = product.table_lines({"clips": {k: report["clips"][k] for k in ("stills_facemask_photo",)}})
    assert "LPIPSf" in lines[0]
    telea_row = next(x for x in lines if x.startswith("stills_facemask_photo") and " telea " in x)
    assert " 0.150 " in telea_row


def test_lpips_every_must_be_a_multiple_of_face_every(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = ["--clips", str(tmp_path), "--json", str(tmp_path / "r.json"), "--face-every", "2"]
    assert product.main([*args, "--lpips-every", "3"]) == 2
    assert "multiple of --face-every" in caplog.text


def test_write_grid(tmp_path: Path) -> None:
    tiles = [np.full((256, 256, 3), v, np.float32) for v in (0.0, 0.3, 0.6, 1.0)]
    product.write_grid(tmp_path / "g.png", [("a\n#0", tiles), ("b\n#1", tiles)])
    img = cv2.imread(str(tmp_path / "g.png"))
    assert img.shape == (22 + 2 * product.GRID_TILE, 150 + 4 * product.GRID_TILE, 3)
    assert img[22 + 5, 150 + 3 * product.GRID_TILE + 5].tolist() == [255, 255, 255]


def test_product_end_to_end_on_tiny_clips_without_a_video(tmp_path: Path) -> None:
    """The real run_stream.py on two stills of the bundled clip (no held-out video: synthetic motion)."""
    cap = cv2.VideoCapture(str(DEMO))
    ok, frame = cap.read()
    cap.release()
    assert ok
    cv2.imwrite(str(tmp_path / "s.png"), frame)
    cfg = EvalClipsConfig(
        out=tmp_path / "clips",
        stills=(StillSource(tmp_path / "s.png", "p"),),
        video=None,
        framing=Framing(size=(320, 240), face_width_px=110),
        hold=3,
        bare_hold=4,
        kinds=("facemask_photo",),
    )
    index = build(cfg)
    assert [c["name"] for c in index["clips"]] == [
        "stills_facemask_photo",
        "talking_synthetic_motion_facemask_photo",
        "bare_stills_static",
        "bare_stills_motion",
    ]
    out = tmp_path / "product_test.json"
    assert product.main(["--clips", str(cfg.out), "--json", str(out), "--work", str(tmp_path / "runs")]) == 0
    report = json.loads(out.read_text())
    stills = report["clips"]["stills_facemask_photo"]
    assert set(stills["methods"]) == {"product", "masked_input", "telea", "navier_stokes"}
    m = stills["methods"]
    # Telea given the true mask must beat the untouched mask inside it.
    assert m["telea"]["psnr_mask"]["mean"] > m["masked_input"]["psnr_mask"]["mean"]
    assert stills["run"]["frames"] == 3
    bare = report["clips"]["bare_stills_static"]
    assert 0.0 <= bare["product"]["altered_share_worst"] <= 1.0
    assert bare["passthrough"]["altered_share_worst"] == 0.0
    assert report["device"]["kind"] == "cpu" and (tmp_path / "product_test_grid.png").is_file()
    if lpips.find_weights() is not None and lpips.torch_available():
        assert report["lpips_model"]["every"] == product.LPIPS_EVERY_FACTOR
        assert all(v["lpips"] is not None and v["lpips"] >= 0.0 for v in m.values())
        assert m["product"]["lpips"] is not None and "LPIPSf" in report["table"][0]
    else:
        assert all(v["lpips"] is None for v in m.values())
    assert any(c["check"].startswith("12: bare_stills_motion") for c in report["checks"])
