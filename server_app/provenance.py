"""What produced a run: the code's git commit (and whether the tree had changes), the package
versions and the host, recorded in summary.json so that ``bouquet run --from RUN_DIR`` can say
whether it reruns the same code."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "flwr",
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "pyyaml",
    "matplotlib",
    "dp-accounting",
    "flwr-datasets",
    "tensorboardx",
    "bouquet",
)
APP_DIR = Path(__file__).resolve().parent.parent


def git_state(folder: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``folder``, None outside one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def provenance() -> dict[str, Any]:
    """Git state of the app (where Flower installed it, else the project the command ran from:
    ``BOUQUET_OUTPUT_ROOT``), package versions, python and host."""
    folders = [APP_DIR, Path(os.environ.get("BOUQUET_OUTPUT_ROOT", APP_DIR))]
    git = next((g for f in folders if f.is_dir() and (g := git_state(f))), None)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "git": git,
        "packages": versions,
        "python": platform.python_version(),
        "host": platform.node(),
    }
