"""Compare run directories: runs that differ only by seed form one cell; a cell's numbers are
the mean and sample standard deviation over its seeds, with every seed's value beside them.

A run directory is what the ServerApp writes (server_app/outputs.py): ``config.yaml``,
``summary.json`` and ``metrics.jsonl``. Nothing here trains or evaluates anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

# Keys that name or place a run rather than define it: never split cells.
NOT_A_SETTING = ("seed", "run-name", "output-dir", "resume", "experiment")


@dataclass(frozen=True)
class Run:
    """One finished (or failed) run directory, read only."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def metric(self) -> str:
        """The score its strategy reported (accuracy for classifiers, fid-proxy for PRISM)."""
        return score_name(self.summary)

    def value(self, statistic: str, last_k: int = 3) -> float:
        """``final``, ``best`` or ``last-k`` (mean of the last k rounds) of the score."""
        if statistic == "last-k":
            scores = [r[self.metric] for r in self.rows[-last_k:]]
            return float(np.mean(scores)) if scores else math.nan
        value = self.summary.get(f"{statistic}-{self.metric}")
        return math.nan if value is None else float(value)

    @property
    def bytes_per_round(self) -> float:
        total = self.summary.get("total-bytes-down", 0) + self.summary.get("total-bytes-up", 0)
        return total / max(1, self.summary.get("rounds-completed", 0))


def score_name(summary: dict[str, Any]) -> str:
    """The score a summary reports as ``final-<score>``: accuracy for the classifiers, the
    strategy's own metric otherwise (the loss and the per-model table are not scores)."""
    if "final-accuracy" in summary:
        return "accuracy"
    names = [
        k[len("final-") :]
        for k in summary
        if k.startswith("final-") and k not in ("final-loss", "final-per-model")
    ]
    if not names:
        raise ValueError("summary.json names no final score (final-<metric>)")
    return names[0]


def load_run(path: Path) -> Run:
    """Read a run directory; a missing or unreadable file is named in the error."""
    files = {name: path / name for name in ("config.yaml", "summary.json")}
    for name, file in files.items():
        if not file.is_file():
            raise ValueError(f"{path} is not a run directory: {name} is missing")
    try:
        config = yaml.safe_load(files["config.yaml"].read_text())
        summary = json.loads(files["summary.json"].read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable config.yaml or summary.json ({err})") from err
    rows = []
    metrics = path / "metrics.jsonl"
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line half-written by a killed process
    return Run(path, config, summary, rows)


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run directory at or under ``paths`` (a grid's folder holds one per cell)."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ValueError(f"{path} does not exist")
        found += (
            [path]
            if (path / "summary.json").is_file()
            else sorted(p.parent for p in path.rglob("summary.json"))
        )
    if not found:
        raise ValueError(f"no run directory (with summary.json) under {', '.join(map(str, paths))}")
    return [load_run(p) for p in found]


@dataclass
class Cell:
    """Runs that share every setting but the seed."""

    settings: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [int(r.config.get("seed", 0)) for r in self.runs]

    def values(self, statistic: str, last_k: int = 3) -> list[float]:
        return [r.value(statistic, last_k) for r in self.runs]

    def stats(self, statistic: str, last_k: int = 3) -> tuple[float, float]:
        """Mean and sample standard deviation (ddof=1; NaN for one seed)."""
        return mean_std(self.values(statistic, last_k))


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def group(runs: list[Run]) -> list[Cell]:
    """Cells by settings (seed, names and paths aside), in the order runs were given; only
    runs that completed count (a failed run is reported, never averaged in)."""
    cells: dict[str, Cell] = {}
    for run in runs:
        if run.summary.get("status") != "completed":
            continue
        settings = {k: v for k, v in run.config.items() if k not in NOT_A_SETTING}
        key = json.dumps(settings, sort_keys=True, default=str)
        cells.setdefault(key, Cell(settings)).runs.append(run)
    for cell in cells.values():
        cell.runs.sort(key=lambda r: int(r.config.get("seed", 0)))
    return list(cells.values())


def varying(cells: list[Cell]) -> list[str]:
    """The settings that differ between cells (the columns that tell them apart)."""
    keys = sorted({k for c in cells for k in c.settings})
    return [k for k in keys if len({json.dumps(c.settings.get(k), default=str) for c in cells}) > 1]


def paired_gaps(cells: list[Cell], by: str, reference: Any, statistic: str) -> list[dict]:
    """For every cell whose ``by`` differs from ``reference``: its gap to the reference cell
    with otherwise equal settings, per shared seed, with mean and standard deviation."""
    out = []
    for cell in cells:
        if cell.settings.get(by) == reference:
            continue
        twin = {**cell.settings, by: reference}
        refs = [c for c in cells if c.settings == twin]
        if not refs:
            continue
        ref = dict(zip(refs[0].seeds, refs[0].values(statistic), strict=True))
        mine = dict(zip(cell.seeds, cell.values(statistic), strict=True))
        shared = sorted(set(ref) & set(mine))
        gaps = [mine[s] - ref[s] for s in shared]
        mean, std = mean_std(gaps)
        out.append({"cell": cell, "seeds": shared, "gaps": gaps, "mean": mean, "std": std})
    return out


def _fmt(mean: float, std: float, values: list[float]) -> str:
    spread = "" if math.isnan(std) else f" ± {std:.3f}"
    seeds = ", ".join(f"{v:.3f}" for v in values)
    return f"{mean:.3f}{spread} [{seeds}]"


def table(cells: list[Cell], last_k: int = 3) -> str:
    """A markdown table: the varying settings, then mean ± std [per seed] of the final, best
    and last-k score, bytes per round and seconds."""
    keys = varying(cells) or ["method"]
    metric = cells[0].runs[0].metric if cells else "accuracy"
    head = [
        *keys,
        "seeds",
        f"final {metric}",
        f"best {metric}",
        f"last-{last_k} {metric}",
        "MB/round",
        "seconds",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in cells:
        row = [str(cell.settings.get(k, "")) for k in keys]
        row.append(",".join(map(str, cell.seeds)))
        for stat in ("final", "best", "last-k"):
            row.append(_fmt(*cell.stats(stat, last_k), cell.values(stat, last_k)))
        row.append(f"{np.mean([r.bytes_per_round for r in cell.runs]) / 1e6:.2f}")
        row.append(f"{np.mean([r.summary.get('seconds', math.nan) for r in cell.runs]):.0f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def gap_table(gaps: list[dict], keys: list[str], by: str, reference: Any) -> str:
    head = [*keys, by, f"gap to {by}={reference}", "per seed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in gaps:
        cells = [str(g["cell"].settings.get(k, "")) for k in [*keys, by]]
        spread = "" if math.isnan(g["std"]) else f" ± {g['std']:.3f}"
        per_seed = ", ".join(f"s{s}: {v:+.3f}" for s, v in zip(g["seeds"], g["gaps"], strict=True))
        lines.append("| " + " | ".join([*cells, f"{g['mean']:+.3f}{spread}", per_seed]) + " |")
    return "\n".join(lines) + "\n"


def plot(cells: list[Cell], out: Path) -> None:
    """Score per round: each cell's mean over seeds with a ± one-std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = varying(cells) or ["method"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for cell in cells:
        metric = cell.runs[0].metric
        length = min(len(r.rows) for r in cell.runs)
        curves = np.array([[row[metric] for row in r.rows[:length]] for r in cell.runs])
        rounds = np.arange(1, length + 1)
        label = ", ".join(f"{k}={cell.settings.get(k)}" for k in keys)
        ax.plot(rounds, curves.mean(axis=0), label=f"{label} (n={len(cell.runs)})")
        if len(cell.runs) > 1:
            std = curves.std(axis=0, ddof=1)
            ax.fill_between(rounds, curves.mean(axis=0) - std, curves.mean(axis=0) + std, alpha=0.2)
    ax.set_xlabel("round")
    ax.set_ylabel(cells[0].runs[0].metric if cells else "score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
