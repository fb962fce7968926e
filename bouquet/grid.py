"""A grid of experiments: settings swept over values and seeds, one run directory per cell,
resumable across sittings.

A grid file (YAML)::

    name: baselines                      # the folder under output-dir
    experiment: configs/base.yaml        # optional: a base experiment file
    settings: {num-server-rounds: 10}    # fixed settings, over the experiment's
    sweep:                               # the product of these lists
      method: [fedavg, feddf]
      partition:                         # a mapping: settings that vary together
        - {label: 2-classes, partitioner: pathological, classes-per-client: 2}
        - {label: dirichlet-0.1, partitioner: dirichlet, alpha: 0.1}
    seeds: [0, 1, 2]
    output-dir: outputs/grids            # optional (default outputs/grids)

Cells run in process (the real ServerApp loop and ClientApp handlers through the in-process
grid, no Ray), one SuperNode per partition (``num-partitions``, default 10). ``run`` skips
completed cells, resumes interrupted ones from their last checkpoint and starts the rest; a cell
whose run failed before completing any round is moved aside (``.failed-N``), never deleted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from client_app.threads import threads_per_worker

if TYPE_CHECKING:
    from flwr.app import Message

GRID_KEYS = {"name", "experiment", "settings", "sweep", "seeds", "output-dir"}


class GridError(ValueError):
    """A grid file that cannot be run; the message names the problem."""


@dataclass(frozen=True)
class Cell:
    """One run of a grid: its settings (seed included) and its run name."""

    name: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class Grid:
    name: str
    output_dir: Path
    cells: tuple[Cell, ...]

    def run_dir(self, cell: Cell) -> Path:
        return self.output_dir / cell.name


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "x"


def _swept(chosen: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Settings and name parts of one combination. A value that is a mapping is a group of
    settings that vary together (``{label: ring, method: fedh2l, topology: ring}``); its
    ``label`` names it and is not a setting."""
    settings: dict[str, Any] = {}
    parts = []
    for key, value in chosen.items():
        if isinstance(value, dict):
            group = {k: v for k, v in value.items() if k != "label"}
            settings.update(group)
            label = value.get("label") or "-".join(map(str, group.values()))
            parts.append(f"{key}={_slug(label)}")
        else:
            settings[key] = value
            parts.append(f"{key}={_slug(value)}")
    return settings, parts


def load_grid(
    path: Path, root: Path, seeds: list[int] | None = None, output_dir: Path | None = None
) -> Grid:
    """Read and check a grid file; every cell's settings are validated before anything runs.
    ``seeds`` and ``output_dir`` replace the file's (a benchmark's own results folder)."""
    from server_app.config import ConfigError, load_config

    try:
        spec = yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError as err:
        raise GridError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(spec, dict):
        raise GridError(f"{path}: not found, or not a mapping of grid keys {sorted(GRID_KEYS)}")
    if unknown := sorted(set(spec) - GRID_KEYS):
        raise GridError(f"{path}: unknown grid keys {unknown}; allowed: {sorted(GRID_KEYS)}")
    sweep, seeds = spec.get("sweep") or {}, seeds or spec.get("seeds", [0])
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise GridError(f"{path}: sweep must map each setting to a non-empty list of values")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise GridError(f"{path}: seeds must be a non-empty list of integers")
    name = str(spec.get("name") or path.stem)
    output_dir = output_dir or Path(spec.get("output-dir", "outputs/grids"))
    output_dir = (output_dir if output_dir.is_absolute() else root / output_dir) / name
    base = {"num-partitions": 10, **(spec.get("settings") or {})}
    if spec.get("experiment"):
        base["experiment"] = str(spec["experiment"])
    cells = []
    for values in itertools.product(*sweep.values()):
        swept, parts = _swept(dict(zip(sweep, values, strict=True)))
        for seed in seeds:
            run_name = "-".join([*parts, f"seed={seed}"])
            settings = {**base, **swept, "seed": seed, "run-name": run_name}
            try:
                load_config(settings)
            except ConfigError as err:
                raise GridError(f"{path}: cell {run_name}: {err}") from err
            cells.append(Cell(run_name, settings))
    return Grid(name, output_dir, tuple(cells))


def cell_status(run_dir: Path) -> str:
    """``completed``, ``resumable`` (rounds done, not finished), ``failed`` (nothing to keep
    but its files) or ``new``."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            if json.loads(summary.read_text()).get("status") == "completed":
                return "completed"
        except json.JSONDecodeError:
            pass
    from server_app.outputs import has_completed_rounds

    checkpoint = run_dir / "checkpoints" / "last.npz"
    if has_completed_rounds(run_dir / "metrics.jsonl") and checkpoint.is_file():
        return "resumable"
    return "failed" if (run_dir / "config.yaml").exists() else "new"


def _set_aside(run_dir: Path) -> Path:
    target = next(
        run_dir.with_name(f"{run_dir.name}.failed-{i}")
        for i in itertools.count(1)
        if not run_dir.with_name(f"{run_dir.name}.failed-{i}").exists()
    )
    run_dir.rename(target)
    return target


def run_cell(
    settings: dict[str, Any],
    output_dir: str,
    threads: int = 0,
    reply_hook: Callable[[Message, Message], Message] | None = None,
    node_extras: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run one experiment to completion in this process, one in-process node per partition;
    returns its summary. ``reply_hook`` rewrites replies and ``node_extras`` adds to some
    partitions' node config (a benchmark's attacker).

    The nodes keep their run state in ``<run directory>/node-state`` (client_app/node_state.py),
    so a resumed cell continues its clients' private models; it is removed once the run
    completes."""
    import shutil

    import torch

    from client_app.app import app as client_app
    from protocol import EXPERIMENT_KEY
    from server_app.config import load_config
    from server_app.local_grid import InProcessGrid
    from server_app.outputs import output_root
    from server_app.runner import run_experiment

    if threads:
        torch.set_num_threads(threads)
    cfg = load_config({**settings, "output-dir": output_dir})
    n = int(cfg.num_partitions)
    extras = node_extras or {}
    state_dir = output_root(cfg) / (cfg.run_name or cfg.default_run_name()) / "node-state"
    nodes = [
        {"partition-id": i, "num-partitions": n, "state-dir": str(state_dir), **extras.get(i, {})}
        for i in range(n)
    ]
    summary = run_experiment(InProcessGrid(client_app, nodes, reply_hook=reply_hook), cfg)
    if summary.get("status") == "completed":  # only this run's: another may share the folder
        shutil.rmtree(state_dir / summary[EXPERIMENT_KEY], ignore_errors=True)
        with contextlib.suppress(OSError):
            state_dir.rmdir()
    return summary


def plan(grid: Grid) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """The cells still to run, each with the settings to run it with (``resume`` when it has
    completed rounds); failed cells without any are moved aside first."""
    for cell in grid.cells:
        status = cell_status(grid.run_dir(cell))
        if status == "completed":
            continue
        if status == "failed":
            moved = _set_aside(grid.run_dir(cell))
            print(f"[grid] {cell.name}: a failed attempt kept in {moved.name}", flush=True)
        yield cell, {**cell.settings, "resume": status == "resumable"}


def run_grid(grid: Grid, jobs: int = 1) -> list[tuple[Cell, dict[str, Any] | BaseException]]:
    """Run what is left of ``grid``; ``jobs`` > 1 runs cells in parallel processes, dividing
    the cores between them. A failing cell is reported and the others go on."""
    todo = list(plan(grid))
    done = len(grid.cells) - len(todo)
    print(
        f"[grid] {grid.name}: {len(grid.cells)} cells, {done} already completed, "
        f"{len(todo)} to run -> {grid.output_dir}",
        flush=True,
    )
    results: list[tuple[Cell, dict[str, Any] | BaseException]] = []
    threads = threads_per_worker(0, jobs) if jobs > 1 else 0
    started = time.time()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [(c, pool.submit(run_cell, s, str(grid.output_dir), threads)) for c, s in todo]
        for i, (cell, future) in enumerate(futures, 1):
            try:
                outcome: dict[str, Any] | BaseException = future.result()
            except Exception as err:  # one cell's failure must not stop the grid
                outcome = err
            results.append((cell, outcome))
            _report(cell, outcome, i, len(futures), time.time() - started)
    return results


def _report(cell: Cell, outcome: Any, i: int, n: int, elapsed: float) -> None:
    eta = elapsed / i * (n - i)
    if isinstance(outcome, BaseException):
        what = f"FAILED: {type(outcome).__name__}: {outcome}"
    else:
        from .compare import score_name

        score = f"final-{score_name(outcome)}"
        what = f"{outcome.get('status')} {score} {outcome.get(score)}"
    print(f"[grid] {i}/{n} {cell.name}: {what} | {elapsed:.0f} s, ETA {eta:.0f} s", flush=True)
