# Sourced by the scripts: Flower's environment for this project (project-local, offline-safe).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export FLWR_HOME="${FLWR_HOME:-$ROOT/.flwr_home}"
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export BOUQUET_DATA_DIR="${BOUQUET_DATA_DIR:-$ROOT/.data}"
export BOUQUET_OUTPUT_ROOT="${BOUQUET_OUTPUT_ROOT:-$ROOT}"
export RAY_DEDUP_LOGS=0
