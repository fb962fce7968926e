"""A run's directory: resolved config, per-round metrics, summary, plots and checkpoints.

::

    <output-dir>/<run-name>/
        config.yaml          resolved settings
        metrics.jsonl        one JSON object per completed round
        summary.json         final and best metrics, paths, versions, status
        plots/*.png          accuracy, loss, bytes per round, label distribution per client
        samples/*.png        generated images (Mosaic: a grid per client generator)
        checkpoints/last.npz, best.npz
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from .config import ExperimentConfig

# Settings that may change between a run and its resumption.
RESUMABLE_CHANGES = {
    "resume",
    "num-server-rounds",
    "round-timeout",
    "max-reply-mb",
    "min-nodes",
    "experiment",
}


def has_completed_rounds(metrics_file: Path) -> bool:
    """Whether a run's ``metrics.jsonl`` records at least one completed round (read only)."""
    if not metrics_file.is_file():
        return False
    return any('"round"' in line for line in metrics_file.read_text().splitlines())


class ResumeError(RuntimeError):
    """``resume=true`` cannot continue safely; the message says what to do."""


def output_root(cfg: ExperimentConfig) -> Path:
    """The folder run directories go to: ``output-dir``, relative to ``BOUQUET_OUTPUT_ROOT``
    (default: the working directory) unless absolute."""
    root = Path(cfg.output_dir)
    if root.is_absolute():
        return root
    return Path(os.environ.get("BOUQUET_OUTPUT_ROOT", Path.cwd())) / root


class RunDirectory:
    """Creates or reopens ``<output-dir>/<run-name>``; never overwrites a previous run.

    A fresh run whose directory already holds results gets the first free ``-N`` suffix.
    ``resume=true`` reopens the most recent directory of that name instead.
    """

    def __init__(self, cfg: ExperimentConfig) -> None:
        root = output_root(cfg)
        name = cfg.run_name or cfg.default_run_name()
        suffixed = sorted(
            (p for p in root.glob(f"{name}-*") if p.name[len(name) + 1 :].isdigit()),
            key=lambda p: int(p.name[len(name) + 1 :]),
        )
        existing = [root / name, *suffixed]
        used = [p for p in existing if (p / "config.yaml").exists()]
        if cfg.resume and not used:
            raise ResumeError(
                f"resume=true but there is no run named {name!r} in {root}: check run-name and "
                "output-dir, or drop resume=true to start it"
            )
        self.resumed = cfg.resume
        if self.resumed:
            self.path = used[-1]
            self._check_compatible(cfg)
        else:
            self.path = next(
                p
                for p in [*existing, *(root / f"{name}-{i}" for i in range(1, 10**6))]
                if not (p / "config.yaml").exists()
            )
        self.checkpoints = self.path / "checkpoints"
        self.plots = self.path / "plots"
        self.samples = self.path / "samples"
        for d in (self.path, self.checkpoints, self.plots):
            d.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yaml").write_text(yaml.safe_dump(cfg.as_dict(), sort_keys=False))

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def _check_compatible(self, cfg: ExperimentConfig) -> None:
        old = yaml.safe_load((self.path / "config.yaml").read_text())
        new = cfg.as_dict()
        changed = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k])
        if changed:
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed)
            raise ValueError(f"resume=true but {self.path} was run with other settings ({diffs})")

    def has_metrics(self) -> bool:
        """Whether ``metrics.jsonl`` records at least one completed round (read only)."""
        return has_completed_rounds(self.metrics_file)

    def read_metrics(self, up_to_round: int) -> list[dict[str, Any]]:
        """Rows of completed rounds <= ``up_to_round``; later rows (written after the last
        checkpoint, before a crash) are cut from the file so that it stays consistent."""
        if not self.metrics_file.exists():
            return []
        rows = []
        for line in self.metrics_file.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line half-written by a killed process
            if row.get("round", 0) <= up_to_round:
                rows.append(row)
        self.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return rows

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_summary(self, summary: dict[str, Any]) -> None:
        tmp = self.path / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(self.path / "summary.json")
