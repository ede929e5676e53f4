#!/usr/bin/env bash
# Set up a fresh machine for dnnlab: Fashion-MNIST from Debian (when apt and root are available),
# a torch build that fits the machine, then dnnlab itself with its dev tools.
#   DNNLAB_TORCH="torch==X"  pick the torch requirement yourself (e.g. a CUDA or CPU build)
#   PYTHON=python3.12        use another interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
   && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "setup: could not install dataset-fashion-mnist; train.py will download the data"
fi

# torch first, so that installing dnnlab (torch>=2.6) finds it satisfied and fetches nothing more.
# With an NVIDIA GPU, plain "torch" (a CUDA build); without, the CPU build 2.13.0 (small, fast to
# install; on these machines it is a local wheel).
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ -n "${DNNLAB_TORCH:-}" ]; then
    spec=$DNNLAB_TORCH
  elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    spec=torch
  else
    spec=torch==2.13.0
  fi
  "$PY" -m pip install -q "$spec"
fi
"$PY" -m pip install -q -e ".[dev]"
