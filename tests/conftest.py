"""Shared fixtures: a project-local data directory and Flower's offline environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("BOUQUET_DATA_DIR", str(ROOT / ".data"))
os.environ.setdefault("FLWR_HOME", str(ROOT / ".flwr_home"))
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"


@pytest.fixture(scope="session")
def digits():
    from federated_data.sources import load_source

    return load_source("digits")
