#!/usr/bin/env bash
# One command from a fresh clone: create .venv, install the right PyTorch build and lsg-graph (with test tools),
# then run the main job on the embedded default data set (`lsg-graph build`: trains the VAE, builds the graph).
#   LSG_TORCH      pip requirement for torch (default: torch==2.13.0, the CPU build, when no NVIDIA GPU is present)
#   LSG_SKIP_RUN=1 only install, do not run the default job
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

if [ -z "${LSG_TORCH:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    LSG_TORCH="torch"              # a GPU machine: the default (CUDA) build
  else
    LSG_TORCH="torch==2.13.0"      # no GPU: the CPU build (served locally here); never the CUDA packages
  fi
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "Installing $LSG_TORCH ..."
  "${PIP[@]}" install "$LSG_TORCH" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch" || { echo "torch failed to install" >&2; exit 1; }
fi
echo "Installing lsg-graph and its test tools ..."
"${PIP[@]}" install -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import lsg_graph, cli.main" || { echo "lsg-graph failed to install" >&2; exit 1; }

if [ "${LSG_SKIP_RUN:-0}" != "1" ]; then
  .venv/bin/lsg-graph build
fi
