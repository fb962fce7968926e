"""Framework overhead of the Flower simulation, measured against bare PyTorch.

1. Bare PyTorch: the local training a FedAvg round contains (every sampled client's
   ``local-steps`` SGD steps on its Fashion-MNIST partition, cnn-small), timed in one process.
2. The same FedAvg experiment through ``flwr run`` (local simulation, Ray): the steady-state
   round time from metrics.jsonl (rounds >= 2; round 1 includes Ray start-up), with the peak RSS
   the run adds, summed over every process on the machine (SuperLink, SuperExec, simulation,
   Ray workers) minus what ran before it.
3. Federations of 1,000 and 10,000 SuperNodes sampling 10 clients per round, to show whether
   the cost grows with the clients sampled or with the federation's size.

Each configuration runs ``--repeats`` times (default 3); tables give the median with the
spread (min-max). Where a round's time goes comes from the nodes' own ``timing`` records in
metrics.jsonl (the simulation runs one ClientApp at a time on this machine, so the round is the
sum of its messages): ``handler`` = time inside our ClientApp handlers (training, data
loading, model construction, record conversion), of which ``load`` is rebuilding the node's
data; ``outside`` = round - handlers: Flower's scheduling and message transport, our server
strategy (sampling, ``query.info`` of new nodes, aggregation).

Writes benchmarks/results/overhead.{json,md}.    python -m benchmarks.overhead [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from federated_data import DataSpec, Federation
from models.training import TrainConfig, seeded_generator, train_classifier
from models.zoo import build_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results"
ROUNDS, STEPS = 4, 50


def bare_round_seconds(num_partitions: int, sampled: int) -> float:
    """Seconds of pure local training for one round of `sampled` clients."""
    fed = Federation(DataSpec(dataset="fmnist", num_partitions=num_partitions, alpha=0.5))
    cfg = TrainConfig(steps=STEPS, batch_size=32, lr=0.05)
    model = build_model("cnn-small", fed.input_shape, fed.num_classes)
    t0 = time.perf_counter()
    for pid in range(sampled):
        part = fed.partition(pid)
        train_classifier(model, part.x, part.y, cfg, seeded_generator(0, pid), torch.device("cpu"))
    return time.perf_counter() - t0


def simulated(num_supernodes: int, clients_per_round: int, name: str) -> dict:
    shutil.rmtree(OUT / "runs" / name, ignore_errors=True)  # a stale run would be read back
    env = {
        **os.environ,
        "BOUQUET_OUTPUT_ROOT": str(OUT),
        "FLWR_HOME": str(OUT / "flwr_home"),
    }
    run_config = (
        f"num-server-rounds={ROUNDS} local-steps={STEPS} clients-per-round="
        f'{clients_per_round} num-partitions={num_supernodes} run-name="{name}" '
        'output-dir="runs"'
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "scripts/simulate.py",
            "--num-supernodes",
            str(num_supernodes),
            "--run-config",
            run_config,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    peak, baseline = 0, _total_rss()

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, _total_rss() - baseline)
            time.sleep(0.5)

    watcher = threading.Thread(target=sample)
    watcher.start()
    wall0 = time.time()
    rc = proc.wait()
    watcher.join()
    rows = [
        json.loads(line)
        for line in (OUT / "runs" / name / "metrics.jsonl").read_text().splitlines()
    ]
    steady = [r for r in rows if r["round"] >= 2]
    return {
        "supernodes": num_supernodes,
        "sampled": clients_per_round or num_supernodes,
        "rc": rc,
        "wall-seconds": round(time.time() - wall0, 1),
        "round-seconds": _mean(r["seconds-round"] for r in steady),
        "round1-seconds": rows[0]["seconds-round"],
        "peak-added-rss-gb": round(peak / 1e9, 2),
        **breakdown(steady),
    }


def breakdown(rows: list[dict]) -> dict[str, float]:
    """Mean seconds per round inside our handlers (and of it, data loading) and outside them."""

    def node_sum(row: dict, stage: str) -> float:
        return sum(sec.get(stage, 0.0) for sec in row["seconds-per-node"].values())

    handler = _mean(node_sum(r, "handler") for r in rows)
    return {
        "handler-seconds": handler,
        "load-seconds": _mean(node_sum(r, "load") for r in rows),
        "outside-seconds": round(_mean(r["seconds-round"] for r in rows) - handler, 3),
    }


def _mean(values: Any) -> float:
    return round(float(np.mean(list(values))), 3)


def _total_rss() -> int:
    """RSS summed over every process on the machine (Ray workers detach from our tree)."""
    total = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                total += int(stat[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                continue
    return total


FEDERATIONS = [(10, 0), (1000, 10), (10000, 10)]  # (SuperNodes, sampled per round; 0 = all)
MEDIAN_KEYS = (
    "bare-pytorch-seconds",
    "round-seconds",
    "ratio",
    "round1-seconds",
    "peak-added-rss-gb",
    "handler-seconds",
    "load-seconds",
    "outside-seconds",
)


def measure(supernodes: int, sampled: int, repeats: int) -> dict[str, Any]:
    """``repeats`` bare + simulated measurements of one federation; medians and spreads."""
    runs = []
    for rep in range(repeats):
        bare = bare_round_seconds(supernodes, sampled or supernodes)
        sim = simulated(supernodes, sampled, f"overhead-{supernodes}-{rep}")
        ratio = round(sim["round-seconds"] / bare, 2)
        runs.append({**sim, "bare-pytorch-seconds": round(bare, 3), "ratio": ratio})
        print(json.dumps(runs[-1]), flush=True)
    row: dict[str, Any] = {"supernodes": supernodes, "sampled": sampled or supernodes}
    for key in MEDIAN_KEYS:
        values = [r[key] for r in runs]
        row[key] = round(float(np.median(values)), 3)
        row[f"{key}-range"] = [min(values), max(values)]
    row["runs"] = runs
    return row


def table(rows: list[dict[str, Any]]) -> str:
    def cell(r: dict[str, Any], key: str) -> str:
        lo, hi = r[f"{key}-range"]
        return f"{r[key]:g} ({lo:g}-{hi:g})"

    lines = [
        "| SuperNodes | sampled/round | bare PyTorch s/round | simulation s/round | ratio | "
        "in handlers s | of it data loading s | outside handlers s | round 1 s | "
        "peak added RSS GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            cell(r, k)
            for k in (
                "bare-pytorch-seconds",
                "round-seconds",
                "ratio",
                "handler-seconds",
                "load-seconds",
                "outside-seconds",
                "round1-seconds",
                "peak-added-rss-gb",
            )
        ]
        lines.append(f"| {r['supernodes']} | {r['sampled']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--supernodes",
        default=",".join(str(n) for n, _ in FEDERATIONS),
        help="which federations to measure (comma-separated sizes)",
    )
    args = parser.parse_args()
    sizes = {int(n) for n in args.supernodes.split(",")}
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, python "
        f"{platform.python_version()}, torch {torch.__version__}",
        "setup": f"FedAvg, cnn-small, Fashion-MNIST Dirichlet 0.5, {STEPS} local steps "
        f"of batch 32, {ROUNDS} rounds (steady state = rounds 2-{ROUNDS}), "
        f"median of {args.repeats} runs (min-max)",
        "rows": [measure(n, k, args.repeats) for n, k in FEDERATIONS if n in sizes],
    }
    (OUT / "overhead.json").write_text(json.dumps(results, indent=2))
    (OUT / "overhead.md").write_text(table(results["rows"]))
    print(table(results["rows"]))


if __name__ == "__main__":
    main()
