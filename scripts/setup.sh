#!/usr/bin/env bash
# Set up a fresh machine for dnnlab: Fashion-MNIST from Debian (when apt and root are available),
# a torch build that fits the machine, then dnnlab itself with its dev tools.
#   DNNLAB_TORCH="torch==X"  pick the torch requirement yourself (e.g. a CUDA or CPU build)
#   PYTHON=python3.12        use another interpreter
# One line per step; pip runs quietly (-q), so what it still prints is a warning or an error.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
step() { echo "setup: $*"; }

if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  step "Fashion-MNIST found in /usr/share/datasets/fashion-mnist"
elif command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  step "installing Fashion-MNIST (apt-get install dataset-fashion-mnist) ..."
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || step "could not install dataset-fashion-mnist; train.py will download the data"
else
  step "Fashion-MNIST not installed (needs apt-get and root); train.py will download the data"
fi

# torch first, so that installing dnnlab (torch>=2.6) finds it satisfied and fetches nothing more.
# With an NVIDIA GPU, plain "torch" (a CUDA build); without, the CPU build 2.13.0 (small, fast to
# install; on these machines it is a local wheel).
if version=$("$PY" -c "import torch; print(torch.__version__)" 2>/dev/null); then
  step "torch $version already installed"
else
  if [ -n "${DNNLAB_TORCH:-}" ]; then
    spec=$DNNLAB_TORCH
  elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    spec=torch
  else
    spec=torch==2.13.0
  fi
  step "installing $spec with $PY -m pip (the longest step) ..."
  "$PY" -m pip install -q "$spec"
fi
step "installing dnnlab and its dev tools (pip install -e .[dev]) ..."
"$PY" -m pip install -q -e ".[dev]"
step "done: $("$PY" -c "import torch, lightning, hydra
print(f'torch {torch.__version__}, lightning {lightning.__version__}, hydra {hydra.__version__}')")"
echo "next: $PY train.py experiment=smoke    (a seconds-long check; its run folder is printed at the end)"
