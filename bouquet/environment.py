"""Flower's environment for a command started outside ``scripts/flwr_env.sh``: project-local
state, no telemetry, no update checks, no runtime dependency installation."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def project_root(start: Path | None = None) -> Path:
    """The checkout that holds the Flower app (a pyproject.toml with ``[tool.flwr.app]``)."""
    here = start or Path.cwd()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "[tool.flwr.app]" in pyproject.read_text():
            return folder
    package = Path(__file__).resolve().parents[1]
    if (package / "pyproject.toml").is_file():
        return package  # an editable install: the checkout this package lives in
    raise SystemExit("bouquet: no Flower app here; run it inside a bouquet checkout")


def set_flower_environment(root: Path) -> None:
    """What scripts/flwr_env.sh exports, without overriding what the user set."""
    os.environ.setdefault("FLWR_HOME", str(root / ".flwr_home"))
    os.environ.setdefault("BOUQUET_DATA_DIR", str(root / ".data"))
    os.environ.setdefault("BOUQUET_OUTPUT_ROOT", str(root))
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    for key in ("FLWR_DISABLE_UPDATE_CHECK", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"):
        os.environ[key] = "1"
    # flwr and the SuperLink it spawns live next to this interpreter (the project's venv).
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
