"""Where a benchmark ran: device, versions, git revision (recorded in every committed result)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import cv2

from engines.metadata import read_onnx_info

REPO_ROOT = Path(__file__).resolve().parent.parent


def git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "kind": device.partition(":")[0],
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)),
    }
    info["name"] = info["cpu"]
    if info["kind"] == "cuda":
        import torch  # the CUDA path has imported it already

        index = torch.device(device).index or 0
        info["name"] = info["cuda"] = torch.cuda.get_device_name(index)
    return info


def versions() -> dict[str, str | None]:
    names = ("onnxruntime", "onnxruntime-gpu", "torch", "numpy", "av", "tensorrt", "torch-tensorrt")
    # importlib.metadata, not import: importing torch only to read its version would inflate peak RSS.
    found = {n: _version(n) for n in names}
    return {
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        **{k: v for k, v in found.items() if v is not None},
    }


def models_info(models: Path) -> dict[str, Any]:
    info = read_onnx_info(models / "generator.onnx")
    det = read_onnx_info(models / "detector.onnx")
    return {
        "dir": str(models),
        "profile": info.profile,
        "crop_size": info.crop_size,
        "iterations": {"detector": det.iterations, "generator": info.iterations},
        "training_data": info.training_data,
        "git_revision": info.git_revision,
    }
