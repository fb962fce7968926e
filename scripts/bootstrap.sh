#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: virtual environment, CPU torch first, the app with its
# dev extras, and the offline datasets (registries only). Safe to re-run; fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/flwr_env.sh

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"   # installed BEFORE anything that depends on torch
pip_quiet() { python -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
source .venv/bin/activate

if ! python -c "import torch" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC"
  pip_quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"
fi
python -c "import torch, sys; sys.exit(0 if torch.__version__ >= '2.2' else 1)" \
  || { echo "[setup] torch $(python -c 'import torch;print(torch.__version__)') is too old" >&2; exit 1; }

if ! python -c "import flwr, server_app, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.bouquet-installed ]; then
  echo "[setup] installing bouquet and its dependencies"
  pip_quiet -e ".[dev]"
  python -c "import flwr, server_app" || { echo "[setup] installation failed" >&2; exit 1; }
  touch .venv/.bouquet-installed
fi

echo "[setup] datasets in $BOUQUET_DATA_DIR"
python -m federated_data.provision --require "${BOUQUET_REQUIRE_DATA:-fmnist,digits}"
