#!/usr/bin/env bash
# Create .venv-peers: NNCodec (MPEG NNR reference codec) and its torch/numpy<2 stack,
# kept apart from the main .venv so the project's own environment is never changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
if [ ! -x .venv-peers/bin/python ]; then
    "$PY" -m venv .venv-peers
fi
.venv-peers/bin/pip install --upgrade pip
.venv-peers/bin/pip install 'numpy<2' torch==2.14.1 torchvision==0.29.1 nncodec
.venv-peers/bin/python -c "import nncodec, numpy; print('nncodec ready, numpy', numpy.__version__)"
