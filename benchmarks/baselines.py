"""Baselines table: FedAvg, FedProx and FedDF on Fashion-MNIST, 10 clients.

The settings are grids/baselines.yaml (Dirichlet alpha in {0.1, 1.0} x {homogeneous cnn-small,
heterogeneous preset} x methods, the same seeds for every method; 10% of the training set carved
out as the unlabelled public split for everyone, only FedDF uses it; the official test set scores
every model). Cells run through ``bouquet.grid`` (the real ServerApp loop and ClientApp handlers
in process), so an interrupted benchmark resumes where it stopped. Writes
benchmarks/results/baselines.{json,md}.

    python -m benchmarks.baselines --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.harness import OUT, ROOT, machine
from bouquet.compare import load_run
from bouquet.grid import load_grid, run_grid

GRID = ROOT / "grids" / "baselines.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="", help="override the grid's seeds, e.g. 0,1,2")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    grid = load_grid(GRID, ROOT, seeds=seeds, output_dir=OUT / "runs" / "grids")
    run_grid(grid)
    results = []
    for cell in grid.cells:
        run = load_run(grid.run_dir(cell))
        s = cell.settings
        results.append(
            {
                **{k: s[k] for k in ("method", "alpha", "models", "seed")},
                "final-accuracy": run.summary["final-accuracy"],
                "best-accuracy": run.summary["best-accuracy"],
                "per-model": run.summary["final-per-model"],
                "bytes-per-round": run.bytes_per_round,
                "seconds": run.summary["seconds"],
            }
        )
    settings = grid.cells[0].settings
    meta = {
        "grid": str(GRID.relative_to(ROOT)),
        "data": "Fashion-MNIST (Debian dataset-fashion-mnist), 10% public split carved out",
        **{k: settings[k] for k in ("num-partitions", "num-server-rounds", "local-steps")},
        "seeds": sorted({c.settings["seed"] for c in grid.cells}),
        "machine": machine(),
    }
    (OUT / "baselines.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (OUT / "baselines.md").write_text("\n".join(table(results)) + "\n")
    print("\n".join(table(results)))


def table(results: list[dict]) -> list[str]:
    methods = list(dict.fromkeys(r["method"] for r in results))
    lines = [
        "| alpha | models | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for alpha, models in dict.fromkeys((r["alpha"], r["models"]) for r in results):
        cells = []
        for method in methods:
            accs = [
                r["final-accuracy"]
                for r in results
                if (r["alpha"], r["models"], r["method"]) == (alpha, models, method)
            ]
            sd = f" ± {np.std(accs, ddof=1):.3f}" if len(accs) > 1 else ""
            cells.append(f"{np.mean(accs):.3f}{sd}")
        lines.append(f"| {alpha} | {models} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
