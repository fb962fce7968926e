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

from client_app.threads import host_cores
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


def simulated(num_supernodes: int, clients_per_round: int, name: str, client_cpus: int) -> dict:
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
            "--client-cpus",
            str(client_cpus),
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
        "client-cpus": client_cpus,
        "rc": rc,
        "wall-seconds": round(time.time() - wall0, 1),
        "round-seconds": _mean(r["seconds-round"] for r in steady),
        "round1-seconds": rows[0]["seconds-round"],
        "peak-added-rss-gb": round(peak / 1e9, 2),
        **breakdown(steady, parallel=max(1, host_cores() // client_cpus)),
    }


def breakdown(rows: list[dict], parallel: int) -> dict[str, float | None]:
    """Mean seconds per round inside our handlers (summed over the nodes; of it, data loading)
    and, when the actors ran one at a time (``parallel`` = 1), outside them."""

    def node_sum(row: dict, stage: str) -> float:
        return sum(sec.get(stage, 0.0) for sec in row["seconds-per-node"].values())

    handler = _mean(node_sum(r, "handler") for r in rows)
    outside = round(_mean(r["seconds-round"] for r in rows) - handler, 3)
    return {
        "handler-seconds": handler,
        "load-seconds": _mean(node_sum(r, "load") for r in rows),
        # Side-by-side actors overlap their handlers: no single "outside" remains.
        "outside-seconds": outside if parallel == 1 else None,
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


# (SuperNodes, sampled per round (0 = all), CPUs per ClientApp actor): Flower's default 2
# CPUs runs one actor at a time on 2 cores; 1 CPU runs one per core, one thread each.
FEDERATIONS = [(10, 0, 2), (10, 0, 1), (1000, 10, 2), (10000, 10, 2)]
MEDIAN_KEYS = (  # in the table's column order
    "bare-pytorch-seconds",
    "round-seconds",
    "ratio",
    "handler-seconds",
    "load-seconds",
    "outside-seconds",
    "round1-seconds",
    "peak-added-rss-gb",
)


def measure(supernodes: int, sampled: int, client_cpus: int, repeats: int) -> dict[str, Any]:
    """``repeats`` bare + simulated measurements of one federation; medians and spreads."""
    runs = []
    for rep in range(repeats):
        bare = bare_round_seconds(supernodes, sampled or supernodes)
        name = f"overhead-{supernodes}-cpus{client_cpus}-{rep}"
        sim = simulated(supernodes, sampled, name, client_cpus)
        ratio = round(sim["round-seconds"] / bare, 2)
        runs.append({**sim, "bare-pytorch-seconds": round(bare, 3), "ratio": ratio})
        print(json.dumps(runs[-1]), flush=True)
    row: dict[str, Any] = {
        "supernodes": supernodes,
        "sampled": sampled or supernodes,
        "client-cpus": client_cpus,
    }
    for key in MEDIAN_KEYS:
        values = [r[key] for r in runs]
        if None in values:
            row[key], row[f"{key}-range"] = None, None
            continue
        row[key] = round(float(np.median(values)), 3)
        row[f"{key}-range"] = [min(values), max(values)]
    row["runs"] = runs
    return row


def table(rows: list[dict[str, Any]]) -> str:
    def cell(r: dict[str, Any], key: str) -> str:
        if r.get(key) is None:
            return "-"
        lo, hi = r[f"{key}-range"]
        return f"{r[key]:g} ({lo:g}-{hi:g})"

    lines = [
        "| SuperNodes | sampled/round | CPUs per actor | bare PyTorch s/round | "
        "simulation s/round | ratio | in handlers s | of it data loading s | "
        "outside handlers s | round 1 s | peak added RSS GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [cell(r, k) for k in MEDIAN_KEYS]
        lines.append(
            f"| {r['supernodes']} | {r['sampled']} | {r.get('client-cpus', 2)} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def _key(row: dict[str, Any]) -> tuple[int, int, int]:
    return row["supernodes"], row["sampled"], row.get("client-cpus", 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--supernodes",
        default=",".join(sorted({str(n) for n, _, _ in FEDERATIONS})),
        help="which federations to measure (comma-separated sizes)",
    )
    parser.add_argument(
        "--client-cpus",
        default="1,2",
        help="which CPUs-per-actor settings to measure (comma-separated)",
    )
    args = parser.parse_args()
    sizes = {int(n) for n in args.supernodes.split(",")}
    cpus = {int(c) for c in args.client_cpus.split(",")}
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(host_cores())
    machine = (
        f"{host_cores()} cores, {platform.machine()}, {_cpu_model()}, python "
        f"{platform.python_version()}, torch {torch.__version__}"
    )
    path = OUT / "overhead.json"
    # Rows measured earlier for other federations are kept: the table is grown, not replaced.
    kept = json.loads(path.read_text())["rows"] if path.exists() else []
    measured = [
        measure(n, k, c, args.repeats) for n, k, c in FEDERATIONS if n in sizes and c in cpus
    ]
    for row in measured:  # rows are grown across sittings, possibly on other machines
        row["machine"] = machine
    new = {_key(r) for r in measured}
    rows = sorted([r for r in kept if _key(r) not in new] + measured, key=_key)
    results: dict[str, Any] = {
        "machine": "per row ('machine')",
        "setup": f"FedAvg, cnn-small, Fashion-MNIST Dirichlet 0.5, {STEPS} local steps "
        f"of batch 32, {ROUNDS} rounds (steady state = rounds 2-{ROUNDS}), "
        f"median of {args.repeats} runs (min-max); bare PyTorch: one process, "
        "one torch thread per core",
        "rows": rows,
    }
    path.write_text(json.dumps(results, indent=2))
    (OUT / "overhead.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
