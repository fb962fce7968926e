"""GPU check: every method's client path on one device, and a FedAvg round there vs on CPU.

1. Every method (the golden test's small digits settings, 3 clients, 2 rounds) runs through
   the in-process grid with every node's ``device`` set to ``--device``; on CUDA the table
   gives the GPU memory the run peaked at, server and clients together (the server picks
   CUDA by itself when present).
2. A FedAvg round on Fashion-MNIST (10 clients, cnn-small, 50 local steps, 3 rounds): the
   median seconds of rounds 2-3 with the nodes on ``--device`` and on the CPU.

Under 8 minutes on one GPU. Without one, ``--device cpu`` checks the script itself (the test
suite runs it that way, on digits only). Writes benchmarks/results/gpu.{json,md}.

    python -m benchmarks.gpu                      # cuda when available
    python -m benchmarks.gpu --device cpu --skip-round
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from benchmarks.harness import OUT, machine, run_in_process
from models.device import resolve_device

BASE = {"dataset": "digits", "num-partitions": 3, "num-server-rounds": 2, "local-steps": 10}
# The golden test's cases (tests/server_app/test_golden.py): one per message flow.
METHODS: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "fedprox": {"proximal-mu": 0.1},
    "feddf": {"models": "heterogeneous", "public-fraction": 0.1},
    "fedftg": {"models": "heterogeneous", "ftg-iterations": 4},
    "fedgen": {"models": "heterogeneous", "fedgen-generator-steps": 20},
    "dense": {"models": "heterogeneous", "dense-epochs": 2, "dense-generator-steps": 5},
    "fedh2l": {"models": "heterogeneous"},
    "fd": {"models": "heterogeneous"},
    "fedproto": {"models": "heterogeneous"},
    "fmd": {"teacher": "pixels", "probe-rounds": 5},
    "mosaic": {
        "models": "heterogeneous",
        "mosaic-distill-round": 1,
        "generator-steps": 20,
        "generator-width": 8,
        "generator-aux-steps": 20,
        "meta-steps": 20,
        "mosaic-distill-steps": 10,
        "distill-steps": 10,
    },
    "prism": {"local-steps": 2, "batch-size": 16, "prism-eval-samples": 60},
    "fedavg-generator": {"local-steps": 2, "batch-size": 16, "prism-eval-samples": 60},
}


def _on(device: str, clients: int) -> dict[int, dict[str, Any]]:
    return {i: {"device": device} for i in range(clients)}


def method_row(method: str, device: str) -> dict[str, Any]:
    """One method's small run with every node on ``device``."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    settings = {**BASE, "method": method, "prism-judge-steps": 50, **METHODS[method]}
    t0 = time.time()
    try:
        status = run_in_process(settings, f"gpu-{method}", 3, node_extras=_on(device, 3))["status"]
    except Exception as err:  # a method that fails on this device is this check's finding
        status = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return {
        "method": method,
        "device": device,
        "status": status,
        "seconds": round(time.time() - t0, 1),
        "peak-gpu-mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }


def round_seconds(device: str, rounds: int, dataset: str = "fmnist") -> float:
    """Median seconds of rounds >= 2 of a 10-client FedAvg run with the nodes on ``device``."""
    settings = {"dataset": dataset, "num-server-rounds": rounds, "local-steps": 50, "alpha": 0.5}
    summary = run_in_process(
        settings, f"gpu-round-{device.replace(':', '')}", 10, node_extras=_on(device, 10)
    )
    with open(summary["paths"]["metrics"]) as f:
        rows = [json.loads(line) for line in f]
    return float(np.median([r["seconds-round"] for r in rows[1:]]))


def table(report: dict[str, Any]) -> list[str]:
    lines = [
        f"Device {report['device']}; {report['machine']}.",
        "",
        "| method | status | seconds | peak GPU MB |",
        "|---|---|---|---|",
    ]
    for r in report["methods"]:
        mb = "-" if r["peak-gpu-mb"] is None else f"{r['peak-gpu-mb']:.1f}"
        lines.append(f"| {r['method']} | {r['status']} | {r['seconds']:.1f} | {mb} |")
    if "round" in report:
        r = report["round"]
        lines += [
            "",
            f"FedAvg round ({r['dataset']}, 10 clients, 50 local steps, median of rounds 2-"
            f"{r['rounds']}): {r['device']} {r['device-seconds']:.2f} s, "
            f"cpu {r['cpu-seconds']:.2f} s.",
        ]
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="", help="cuda, cuda:1, cpu (default: cuda if present)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the timed FedAvg run")
    p.add_argument("--round-dataset", default="fmnist", help="data of the timed FedAvg run")
    p.add_argument("--skip-round", action="store_true", help="only the per-method check")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    device = str(resolve_device(args.device))
    report: dict[str, Any] = {"device": device, "machine": machine(), "methods": []}
    if device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(torch.device(device))
    for method in args.methods.split(","):
        report["methods"].append(method_row(method, device))
        print(json.dumps(report["methods"][-1]), flush=True)
        _write(report)  # a lease can end mid-run: keep every finished row
    if not args.skip_round:
        report["round"] = {
            "rounds": args.rounds,
            "dataset": args.round_dataset,
            "device": device,
            "device-seconds": round_seconds(device, args.rounds, args.round_dataset),
            "cpu-seconds": round_seconds("cpu", args.rounds, args.round_dataset),
        }
    _write(report)
    print("\n".join(table(report)))
    return report


def _write(report: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu.json").write_text(json.dumps(report, indent=2))
    (OUT / "gpu.md").write_text("\n".join(table(report)) + "\n")


if __name__ == "__main__":
    main()
