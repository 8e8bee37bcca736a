"""--preset: what it sets, what explicit options keep, and the log line that says both."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from engines.assets import models_dir
from stream.presets import PRESETS, apply_preset


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=Path, default=None)
    p.add_argument("--detect-every", type=int, default=1)
    p.add_argument("--mesh-every", type=int, default=1)
    p.add_argument("--max-faces", type=int, default=4)
    p.add_argument("--queue-size", type=int, default=4)
    p.add_argument("--precision", default="auto")
    p.add_argument("--crf", type=int, default=16)
    return p


def _apply(name: str, argv: list[str]) -> tuple[argparse.Namespace, str]:
    p = _parser()
    args = p.parse_args(argv)
    return args, apply_preset(name, args, p, argv)


def test_realtime_sets_its_values() -> None:
    args, line = _apply("realtime", [])
    assert (args.detect_every, args.mesh_every, args.max_faces, args.queue_size, args.crf) == (2, 2, 2, 2, 23)
    assert args.models == models_dir() / "small" and (args.models / "generator.onnx").is_file()
    assert line.startswith(f"preset realtime: models={models_dir() / 'small'} detect_every=2")
    assert "explicit" not in line


def test_explicit_options_win_even_when_they_equal_the_default() -> None:
    args, line = _apply("realtime", ["--detect-every", "1", "--crf=30"])
    assert args.detect_every == 1 and args.crf == 30 and args.max_faces == 2
    assert "explicit options override it: --detect-every 1, --crf 30" in line


def test_quality_and_unknown_names() -> None:
    args, line = _apply("quality", ["--max-faces", "8"])
    assert args.precision == "fp32" and args.detect_every == 1 and args.max_faces == 8 and args.models is None
    assert "models=auto" in line and "--max-faces 8" in line
    with pytest.raises(ValueError, match="realtime, quality"):
        _apply("fast", [])


def test_a_preset_for_an_option_the_parser_lacks_is_an_error() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--detect-every", type=int, default=1)
    with pytest.raises(ValueError, match="no option for --models"):
        apply_preset("realtime", p.parse_args([]), p, [])
    assert set(PRESETS) == {"realtime", "quality"}
