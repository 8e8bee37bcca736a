from __future__ import annotations

import pytest

from stream.app import StreamConfig, default_output
from stream.restore.build import smoother_for_crop
from stream.restore.smoother import SmootherConfig


def test_mask_grow_and_feather_scale_with_the_crop() -> None:
    base = SmootherConfig()
    assert smoother_for_crop(256) == base
    small = smoother_for_crop(128)
    assert (small.dilate_px, small.feather_px) == (2, 3)
    assert smoother_for_crop(16).dilate_px == 1 and smoother_for_crop(16).feather_px == 1


def test_config_refuses_bad_values_with_what_was_expected() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        StreamConfig(backend="tflite")
    with pytest.raises(ValueError, match="output must differ from the input"):
        StreamConfig(input="a.mp4", output="./a.mp4")
    with pytest.raises(ValueError, match="locate_ahead must be one of"):
        StreamConfig(locate_ahead="always")
    assert default_output("/x/clip.mov").name == "clip_restored.mp4"


def test_locate_ahead_reaches_the_run_config() -> None:
    from stream.cli import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args(["--locate-ahead", "on"])).locate_ahead == "on"
    assert config_from_args(build_parser().parse_args([])).locate_ahead == "auto"


def test_networks_get_one_thread_on_a_cpu_unless_told(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from stream.app import CPU_NETWORK_THREADS, network_threads

    with caplog.at_level(logging.INFO, logger="stream.app"):
        assert network_threads(StreamConfig(), "cpu") == CPU_NETWORK_THREADS == 1
    assert any("1 thread per network on the CPU" in r.getMessage() for r in caplog.records)
    assert network_threads(StreamConfig(intra_threads=2), "cpu") == 2
    assert network_threads(StreamConfig(), "cuda:0") is None
    assert network_threads(StreamConfig(backend="triton"), "cpu") is None
