"""Framework overhead of the Flower simulation, measured against bare PyTorch.

1. Bare PyTorch: the local training a FedAvg round contains (every sampled client's
   ``local-steps`` SGD steps on its Fashion-MNIST partition, cnn-small), timed in one process.
2. The same FedAvg experiment through ``flwr run`` (local simulation, Ray): the steady-state
   round time from metrics.jsonl (rounds >= 2; round 1 includes Ray start-up), with the peak RSS
   the run adds, summed over every process on the machine (SuperLink, SuperExec, simulation,
   Ray workers) minus what ran before it.
3. A 1,000-client federation sampling 10 clients per round, to show that the cost grows with
   the clients sampled, not with the federation's size.

Writes benchmarks/results/overhead.{json,md}.    python -m benchmarks.overhead
"""

from __future__ import annotations

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
    steady = [r["seconds-round"] for r in rows if r["round"] >= 2]
    return {
        "supernodes": num_supernodes,
        "sampled": clients_per_round or num_supernodes,
        "rc": rc,
        "wall-seconds": round(time.time() - wall0, 1),
        "round-seconds": round(float(np.mean(steady)), 3),
        "round1-seconds": rows[0]["seconds-round"],
        "peak-added-rss-gb": round(peak / 1e9, 2),
    }


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


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, python "
        f"{platform.python_version()}, torch {torch.__version__}",
        "setup": f"FedAvg, cnn-small, Fashion-MNIST Dirichlet 0.5, {STEPS} local steps "
        f"of batch 32, {ROUNDS} rounds (steady state = rounds 2-{ROUNDS})",
    }
    bare10 = bare_round_seconds(10, 10)
    sim10 = simulated(10, 0, "overhead-10")
    sim1000 = simulated(1000, 10, "overhead-1000")
    bare1000 = bare_round_seconds(1000, 10)
    results["rows"] = [
        {
            **sim10,
            "bare-pytorch-seconds": round(bare10, 3),
            "ratio": round(sim10["round-seconds"] / bare10, 2),
        },
        {
            **sim1000,
            "bare-pytorch-seconds": round(bare1000, 3),
            "ratio": round(sim1000["round-seconds"] / bare1000, 2),
        },
    ]
    (OUT / "overhead.json").write_text(json.dumps(results, indent=2))
    lines = [
        "| SuperNodes | sampled/round | bare PyTorch s/round | simulation s/round | ratio | "
        "round 1 s | peak added RSS GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['supernodes']} | {r['sampled']} | {r['bare-pytorch-seconds']} | "
            f"{r['round-seconds']} | {r['ratio']} | {r['round1-seconds']} | "
            f"{r['peak-added-rss-gb']} |"
        )
    (OUT / "overhead.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(results, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
