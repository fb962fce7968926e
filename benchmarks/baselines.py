"""Baselines table: FedAvg, FedProx and FedDF on Fashion-MNIST, 10 clients.

Grid: Dirichlet alpha in {0.1, 1.0} x {homogeneous cnn-small, heterogeneous preset
(cnn-small, mlp, cnn-large round-robin)} x methods, same seeds for every method. Every method
uses the same training pool: 10% of the training set is carved out as the unlabelled public split
(only FedDF uses it), the official 10,000-image test set scores every model.

Runs the real ServerApp loop and ClientApp handlers through the in-process grid (no Ray), so the
numbers are the algorithms', not the transport's. Writes benchmarks/results/baselines.{json,md}.

    python benchmarks/baselines.py --rounds 10 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from client_app.app import app as client_app
from server_app.config import DEFAULTS, load_config
from server_app.local_grid import InProcessGrid
from server_app.runner import run_experiment

OUT = Path(__file__).resolve().parent / "results"
METHODS = ("fedavg", "fedprox", "feddf")
ALPHAS = (0.1, 1.0)
MODELS = ("cnn-small", "heterogeneous")


def run_in_process(overrides: dict[str, Any], run_name: str, clients: int) -> dict[str, Any]:
    """One experiment through the in-process grid; returns its summary plus wall seconds."""
    cfg = load_config(
        {
            **DEFAULTS,
            "dataset": "fmnist",
            "num-partitions": clients,
            "output-dir": str(OUT / "runs"),
            "run-name": run_name,
            **overrides,
        }
    )
    shutil.rmtree(OUT / "runs" / run_name, ignore_errors=True)  # never read a stale run
    nodes = [{"partition-id": i, "num-partitions": clients} for i in range(clients)]
    t0 = time.time()
    summary = run_experiment(InProcessGrid(client_app, nodes), cfg)
    return {**summary, "wall-seconds": round(time.time() - t0, 1)}


def run_cell(method: str, alpha: float, models: str, seed: int, args) -> dict:  # type: ignore[no-untyped-def]
    s = run_in_process(
        {
            "method": method,
            "alpha": alpha,
            "models": models,
            "seed": seed,
            "num-server-rounds": args.rounds,
            "local-steps": args.local_steps,
            "public-fraction": 0.1,
            "distill-steps": args.distill_steps,
        },
        f"{method}-a{alpha}-{models}-s{seed}",
        args.clients,
    )
    return {
        "method": method,
        "alpha": alpha,
        "models": models,
        "seed": seed,
        "final-accuracy": s["final-accuracy"],
        "best-accuracy": s["best-accuracy"],
        "per-model": s["final-per-model"],
        "bytes-per-round": (s["total-bytes-down"] + s["total-bytes-up"]) / args.rounds,
        "seconds": s["wall-seconds"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-steps", type=int, default=50)
    p.add_argument("--distill-steps", type=int, default=200)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--seeds", default="0")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for alpha in ALPHAS:
        for models in MODELS:
            for method in METHODS:
                for seed in seeds:
                    results.append(run_cell(method, alpha, models, seed, args))
                    print(json.dumps(results[-1]), flush=True)
    meta = {
        "data": "Fashion-MNIST (Debian dataset-fashion-mnist), 10% public split carved out",
        "clients": args.clients,
        "rounds": args.rounds,
        "local-steps": args.local_steps,
        "batch-size": DEFAULTS["batch-size"],
        "lr": DEFAULTS["lr"],
        "seeds": seeds,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"python {platform.python_version()}",
    }
    (OUT / "baselines.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "| alpha | models | " + " | ".join(METHODS) + " |",
        "|---|---|" + "---|" * len(METHODS),
    ]
    for alpha in ALPHAS:
        for models in MODELS:
            cells = []
            for method in METHODS:
                accs = [
                    r["final-accuracy"]
                    for r in results
                    if (r["alpha"], r["models"], r["method"]) == (alpha, models, method)
                ]
                sd = f" ± {np.std(accs):.3f}" if len(accs) > 1 else ""
                cells.append(f"{np.mean(accs):.3f}{sd}")
            lines.append(f"| {alpha} | {models} | " + " | ".join(cells) + " |")
    (OUT / "baselines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
