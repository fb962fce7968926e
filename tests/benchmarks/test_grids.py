"""The grid files behind README tables describe the runs whose results are committed: the
same cells and the same settings as recorded in benchmarks/results/*.json."""

from __future__ import annotations

import json

from benchmarks.fedh2l import GRID, labels
from benchmarks.harness import OUT, ROOT
from bouquet.grid import load_grid


def test_the_baselines_grid_is_the_benchmarked_grid():
    recorded = json.loads((OUT / "baselines.json").read_text())
    meta = recorded["meta"]
    grid = load_grid(ROOT / "grids" / "baselines.yaml", ROOT)
    keys = ("method", "alpha", "models", "seed")
    assert {tuple(c.settings[k] for k in keys) for c in grid.cells} == {
        tuple(r[k] for k in keys) for r in recorded["results"]
    }
    for cell in grid.cells:
        s = cell.settings
        assert s["num-server-rounds"] == meta.get("num-server-rounds", meta.get("rounds"))
        assert s["local-steps"] == meta["local-steps"]
        assert s["num-partitions"] == meta.get("num-partitions", meta.get("clients"))
        assert s["dataset"] == "fmnist" and s["public-fraction"] == 0.1


def test_the_fedh2l_grid_is_the_benchmarked_grid():
    recorded = json.loads((OUT / "fedh2l.json").read_text())
    names = labels(GRID)
    assert [(r["partition"], r["row"]) for r in recorded["results"]] == [
        (p, r) for p in names["partition"] for r in names["row"]
    ]
    grid = load_grid(ROOT / "grids" / "fedh2l.yaml", ROOT)
    assert len(grid.cells) == len(recorded["results"])
    args = recorded.get("args") or {"rounds": 5, "local_steps": 50}  # the run of the table
    settings = {(c.settings["num-server-rounds"], c.settings["local-steps"]) for c in grid.cells}
    assert settings == {(args["rounds"], args["local_steps"])}
