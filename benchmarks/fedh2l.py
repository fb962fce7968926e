"""FedH2L table: Fashion-MNIST, 10 clients with heterogeneous architectures.

The settings are grids/fedh2l.yaml. Partitions: Dirichlet alpha in {0.1, 1.0} and 2 classes per
client. Rows: FedH2L (complete graph, align none), FedH2L (complete, first-order MLDG), FedH2L
(ring, none), every client trained alone (no seed set, no exchange), FedAvg with one shared
architecture (cnn-small) and FedDF over the same heterogeneous mix (10% public split). Accuracy
on the official test set: per client for FedH2L and alone (mean and worst client), of the global
model(s) for FedAvg/FedDF; measured bytes per round (down + up, serialised records; FedH2L's round
1 also carries the seed set, so the steady-state rounds are reported separately). Resumable:
cells run through ``bouquet.grid``.

    python -m benchmarks.fedh2l --seeds 0
    python -m benchmarks.fedh2l --grid grids/fedh2l-clip.yaml   # the gradient clip's check
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.harness import OUT, ROOT
from bouquet.compare import load_run
from bouquet.grid import load_grid, run_grid

GRID = ROOT / "grids" / "fedh2l.yaml"


def labels(grid_file: Path) -> dict[str, list[str]]:
    """The grid's partition and row labels, in the file's order."""
    sweep = yaml.safe_load(grid_file.read_text())["sweep"]
    return {key: [v["label"] for v in values] for key, values in sweep.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="", help="override the grid's seeds, e.g. 0,1,2")
    p.add_argument("--grid", type=Path, default=GRID, help="a grid of the same shape")
    p.add_argument("--jobs", type=int, default=1, help="cells run in parallel")
    p.add_argument(
        "--alone-from",
        type=Path,
        nargs="+",
        default=[],
        help="other tables' JSON (same data, clients and seeds) whose 'alone' rows the "
        "'clients below their alone-run' column compares with, for a grid without its own",
    )
    args = p.parse_args()
    reference = [r for path in args.alone_from for r in json.loads(path.read_text())["results"]]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    grid = load_grid(args.grid, ROOT, seeds=seeds, output_dir=OUT / "runs" / "grids")
    run_grid(grid, jobs=args.jobs)
    names = labels(args.grid)
    per_seed = len(grid.cells) // (len(names["partition"]) * len(names["row"]))
    results = []
    for i, cell in enumerate(grid.cells):
        run = load_run(grid.run_dir(cell))
        accs = [m["accuracy"] for m in run.summary["final-per-model"].values()]
        combo = i // per_seed
        results.append(
            {
                "partition": names["partition"][combo // len(names["row"])],
                "row": names["row"][combo % len(names["row"])],
                "seed": cell.settings["seed"],
                "mean-accuracy": float(np.mean(accs)),
                "worst-accuracy": float(np.min(accs)),
                "per-client": {k: m["accuracy"] for k, m in run.summary["final-per-model"].items()},
                "bytes-round-1": run.rows[0]["bytes-down"] + run.rows[0]["bytes-up"],
                "bytes-later-rounds": float(
                    np.mean([r["bytes-down"] + r["bytes-up"] for r in run.rows[1:]])
                ),
                "bytes-amortised": float(
                    np.mean([r["bytes-down"] + r["bytes-up"] for r in run.rows])
                ),
                "bytes-up-later-rounds": float(np.mean([r["bytes-up"] for r in run.rows[1:]])),
                # With posterior-delta: the seed-set rows the clients sent, all clients.
                "rows-sent-later-rounds": [
                    r.get("train", {}).get("posterior-rows-sent") for r in run.rows[1:]
                ],
                "seconds": run.summary["seconds"],
            }
        )
    grid_path = args.grid.resolve()
    meta: dict[str, Any] = {
        "grid": str(grid_path.relative_to(ROOT)),
        "seeds": seeds or "the grid's",
    }
    if args.alone_from:
        meta["alone-from"] = [str(path) for path in args.alone_from]
    (OUT / f"{grid.name}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "| partition | method | seed | mean acc | worst client | bytes/round (round 1) | "
        "bytes/round (later) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['partition']} | {r['row']} | {r['seed']} | {r['mean-accuracy']:.3f} | "
            f"{r['worst-accuracy']:.3f} | {r['bytes-round-1'] / 1e6:.3f} MB | "
            f"{r['bytes-later-rounds'] / 1e6:.3f} MB |"
        )
    lines += ["", *seed_summary(results, reference)]
    (OUT / f"{grid.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _per_seed(values: list[float]) -> str:
    mean = f"{np.mean(values):.3f}"
    return mean if len(values) == 1 else f"{mean} ({', '.join(f'{v:.3f}' for v in values)})"


def seed_summary(
    results: list[dict[str, Any]], reference: list[dict[str, Any]] | None = None
) -> list[str]:
    """Per partition and method, over the seeds: mean and worst client (mean, then each seed),
    how many clients end below their own alone-run of the same seed (rows whose clients match
    the alone row's, from ``results`` or else from ``reference``, another table's results), and
    bytes per round amortised over the run."""
    alone = {
        (r["partition"], r["seed"]): r["per-client"]
        for r in [*(reference or []), *results]
        if r["row"].startswith("alone")
    }
    lines = [
        "| partition | method | seeds | mean acc (per seed) | worst client (per seed) | "
        "clients below their alone-run | bytes/round, amortised |",
        "|---|---|---|---|---|---|---|",
    ]
    for partition, row in dict.fromkeys((r["partition"], r["row"]) for r in results):
        rs = [r for r in results if (r["partition"], r["row"]) == (partition, row)]
        below = []
        for r in rs:
            ref = alone.get((partition, r["seed"]))
            if ref is not None and set(ref) == set(r["per-client"]) and not row.startswith("alone"):
                below.append(sum(acc < ref[k] for k, acc in r["per-client"].items()))
        lines.append(
            f"| {partition} | {row} | {len(rs)} | "
            f"{_per_seed([r['mean-accuracy'] for r in rs])} | "
            f"{_per_seed([r['worst-accuracy'] for r in rs])} | "
            f"{', '.join(map(str, below)) if below else '-'} | "
            f"{np.mean([r['bytes-amortised'] for r in rs]) / 1e6:.3f} MB |"
        )
    return lines


if __name__ == "__main__":
    main()
