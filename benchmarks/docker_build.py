"""Docker images: size and air-gapped build time, from nothing (no image, no wheel cached).

Runs ``scripts/docker_images.py --fresh`` (root and a Docker engine needed) and writes
benchmarks/results/docker-images.{json,md}. Docker's own layer cache is cleared of the
project's images by ``--fresh``; the Debian mirror and pip's local caches are what they are.

    sudo python -m benchmarks.docker_build
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / "docker-images.json"
    subprocess.run(
        [sys.executable, "scripts/docker_images.py", "--fresh", "--report", str(raw)],
        cwd=ROOT,
        check=True,
    )
    report = json.loads(raw.read_text())
    report["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    raw.write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| image | size (MB) |", "|---|---|"]
    lines += [f"| `{tag}` | {mb:.0f} |" for tag, mb in report["size-mb"].items()]
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {s:.0f} |" for step, s in report["seconds"].items()]
    lines += [f"| total | {report['total-seconds']:.0f} |", "", f"Machine: {report['machine']}."]
    (OUT / "docker-images.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
