"""Attacks table: FedAvg with each aggregation defence, and FedH2L, when 1 of 10 clients attacks.

Fashion-MNIST, 10 clients, Dirichlet alpha = 0.5, cnn-small everywhere; partition 0 is the
attacker (in-process grid, real ServerApp loop and ClientApp). Its attacks:

- ``inflate``: reports num-examples = 10**12 (a protocol violation: dropped by validation);
- ``sign-flip-10`` / ``sign-flip-100``: sends global - k * (its honest update) (weights only);
- ``weights-1e6``: every float weight set to 1e6 (finite: passes validation; weights only);
- ``label-flip``: trains on labels y -> 9 - y (``inject-fault="label-flip"``: well-formed);
- ``noise-donation``: FedH2L only; its seed donation's images replaced by uniform noise (same
  shape, count and labels: passes validation);
- ``adversarial-posteriors``: FedH2L only; confident posteriors on the class after its own
  prediction (valid probability rows).

FedAvg's accuracy is its global model's; FedH2L's the mean of the nine honest clients' own
models (the attacker's is excluded). Resumable: finished cells are kept in
benchmarks/results/attacks.json and skipped (every seed of a cell runs before the next cell);
attacks.md covers the cells finished so far.

    python -m benchmarks.attacks --seeds 0,1,2
    python -m benchmarks.attacks --table-only
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord

from benchmarks.harness import OUT, machine, run_in_process

ATTACKER = 0
WEIGHT_ATTACKS = ("sign-flip-10", "sign-flip-100", "weights-1e6")
FEDH2L_ATTACKS = ("noise-donation", "adversarial-posteriors")
ATTACKS = ("clean", "inflate", *WEIGHT_ATTACKS, "label-flip", *FEDH2L_ATTACKS)
# column -> the settings it adds to the experiment
COLUMNS: dict[str, dict[str, Any]] = {
    "mean": {"aggregation": "mean"},
    "trimmed-mean": {"aggregation": "trimmed-mean"},
    "median": {"aggregation": "median"},
    "multi-krum": {"aggregation": "multi-krum"},
    "mean, update-clip 2": {"update-clip": 2.0},
    "mean, loss-gate 3": {"loss-gate": 3.0, "gate-per-class": 20},
    # Measured before FedH2L's gradient clip existed: pinned off so the table reproduces.
    "FedH2L": {"method": "fedh2l", "h2l-max-grad-norm": 0.0},
    "FedH2L, agreement": {
        "method": "fedh2l",
        "peer-weighting": "agreement",
        "h2l-max-grad-norm": 0.0,
    },
}


def applies(attack: str, column: str) -> bool:
    fedh2l = COLUMNS[column].get("method") == "fedh2l"
    if attack in WEIGHT_ATTACKS:
        return not fedh2l  # FedH2L exchanges no weights
    if attack in FEDH2L_ATTACKS:
        return fedh2l
    return True


# Run after every other cell: the defences added on top of the mean.
LATER = ("mean, update-clip 2", "mean, loss-gate 3")


def plan(seeds: list[int]) -> list[tuple[str, str, int]]:
    """Every applicable (attack, column, seed), every seed of a cell together, so that an
    interrupted grid leaves whole cells; the defences on top of the mean come last."""
    cells = [(a, c) for a in ATTACKS for c in COLUMNS if applies(a, c)]
    cells.sort(key=lambda cell: cell[1] in LATER)  # stable: otherwise in table order
    return [(a, c, seed) for a, c in cells for seed in seeds]


def _arrays(record: Any) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in record.items()}


def _rewrite_weights(name: str, content: Any, sent: dict[str, np.ndarray]) -> None:
    honest = _arrays(content["arrays"])
    for k, v in honest.items():
        if v.dtype != np.float32:
            continue
        if name == "weights-1e6":
            v[...] = 1e6
        else:
            scale = float(name.rsplit("-", 1)[1])
            v[...] = sent[k] - scale * (v - sent[k])
    content["arrays"] = ArrayRecord({k: Array(v) for k, v in honest.items()})


def _attacker_sent(msg: Message, reply: Message) -> bool:
    """Whether ``reply`` is the attacker's (donations carry no metrics: the in-process grid
    numbers node ids 1000 + partition)."""
    metrics = reply.content.metric_records.get("metrics")
    if metrics is not None and "partition-id" in metrics:
        return metrics["partition-id"] == ATTACKER
    return int(msg.metadata.dst_node_id) == 1000 + ATTACKER


def _hook(name: str) -> Callable[[Message, Message], Message] | None:
    """A reply hook: the attacker's replies rewritten by ``name`` (None: no rewrite)."""
    if name in ("clean", "label-flip"):
        return None
    wanted = {"noise-donation": "query.seed", "adversarial-posteriors": "train.h2l"}
    kinds = (wanted[name],) if name in wanted else ("train", "train.h2l")

    def hook(msg: Message, reply: Message) -> Message:
        if msg.metadata.message_type not in kinds or not reply.has_content():
            return reply
        if not _attacker_sent(msg, reply):
            return reply
        content = reply.content
        if name == "inflate":
            metrics = dict(content.metric_records["metrics"])
            content["metrics"] = MetricRecord({**metrics, "num-examples": 10**12})
        elif name == "noise-donation":
            seed = _arrays(content["seed-set"])
            noise = np.random.default_rng(0).integers(0, 256, seed["x"].shape, dtype=np.uint8)
            content["seed-set"] = ArrayRecord({"x": Array(noise), "y": Array(seed["y"])})
        elif name == "adversarial-posteriors":
            p = _arrays(content.array_records["posteriors"])["p"]
            wrong = (p.argmax(1) + 1) % p.shape[1]
            bad = np.full_like(p, 0.001 / (p.shape[1] - 1))
            bad[np.arange(len(p)), wrong] = 0.999
            content["posteriors"] = ArrayRecord({"p": Array(bad)})
        else:
            _rewrite_weights(name, content, _arrays(msg.content["arrays"]))
        return Message(content, reply_to=msg)

    return hook


def _honest_accuracy(summary: dict[str, Any]) -> float:
    """FedH2L: the mean final accuracy of every client but the attacker; else the global's."""
    if summary.get("method") != "fedh2l":
        return float(summary["final-accuracy"])
    per = summary["final-per-model"] or {}
    honest = [m["accuracy"] for name, m in per.items() if not name.startswith(f"p{ATTACKER}-")]
    return float(np.mean(honest))


def run_cell(attack: str, column: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    settings = {
        "dataset": args.dataset,
        "alpha": 0.5,
        "num-server-rounds": args.rounds,
        "local-steps": args.local_steps,
        "seed": seed,
        **COLUMNS[column],
    }
    extras = {ATTACKER: {"inject-fault": "label-flip"}} if attack == "label-flip" else None
    tag = column.lower().replace(",", "").replace(" ", "-")
    t0 = time.time()
    try:
        summary = run_in_process(
            settings,
            f"attacks-{attack}-{tag}-s{seed}",
            args.clients,
            reply_hook=_hook(attack),
            node_extras=extras,
        )
        accuracy, status = _honest_accuracy(summary), "completed"
    except Exception as err:  # the attack stopped the run: that is the result
        accuracy, status = None, f"failed: {type(err).__name__}: {str(err)[:200]}"
    return {
        "attack": attack,
        "column": column,
        "seed": seed,
        "final-accuracy": accuracy,
        "status": status,
        "seconds": round(time.time() - t0, 1),
    }


def _cell(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "-"
    per = ["failed" if r["final-accuracy"] is None else f"{r['final-accuracy']:.3f}" for r in rows]
    accs = [r["final-accuracy"] for r in rows if r["final-accuracy"] is not None]
    mean = f"{np.mean(accs):.3f}" if len(accs) == len(rows) else "failed"
    return f"{mean} ({', '.join(per)})"


def table(results: list[dict[str, Any]]) -> list[str]:
    seeds = sorted({r["seed"] for r in results})
    lines = [
        f"Final test accuracy, seeds {', '.join(map(str, seeds))} (mean; per seed in brackets; "
        "'failed' = the run stopped; 'n/a' = the attack does not apply; FedH2L: mean of the "
        "nine honest clients' own models).",
        "",
        "| attack | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for attack in ATTACKS:
        cells = []
        for column in COLUMNS:
            if not applies(attack, column):
                cells.append("n/a")
                continue
            rows = [r for r in results if (r["attack"], r["column"]) == (attack, column)]
            cells.append(_cell(sorted(rows, key=lambda r: r["seed"])))
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    return lines


def _load(path: Any) -> list[dict[str, Any]]:
    """Finished cells; rows of the first table (before columns) name theirs 'aggregation'."""
    if not path.exists():
        return []
    rows = json.loads(path.read_text())["results"]
    for r in rows:
        r.setdefault("column", r.pop("aggregation", None))
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--local-steps", type=int, default=50)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--seeds", default="0")
    p.add_argument("--table-only", action="store_true", help="rewrite attacks.md from the json")
    p.add_argument("--attacks", default="", help="only these attacks (comma-separated)")
    p.add_argument(
        "--columns",
        default="",
        help="only these columns (names from the table's header, separated by ;)",
    )
    return p


def main() -> None:
    args = parser().parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "attacks.json"
    results = _load(path)
    done = {(r["attack"], r["column"], r["seed"]) for r in results}
    meta = {
        "data": f"{args.dataset}, Dirichlet alpha 0.5, cnn-small, partition 0 attacks",
        "clients": args.clients,
        "rounds": args.rounds,
        "local-steps": args.local_steps,
        "machine": machine(),
    }
    seeds = [] if args.table_only else [int(s) for s in args.seeds.split(",")]
    columns = [c.strip() for c in args.columns.split(";") if c.strip()] or list(COLUMNS)
    if unknown := set(columns) - set(COLUMNS):
        raise SystemExit(f"unknown --columns {sorted(unknown)}; the columns are {list(COLUMNS)}")
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()] or list(ATTACKS)
    if unknown := set(attacks) - set(ATTACKS):
        raise SystemExit(f"unknown --attacks {sorted(unknown)}; the attacks are {list(ATTACKS)}")
    for attack, column, seed in plan(seeds):
        if (attack, column, seed) in done or column not in columns or attack not in attacks:
            continue
        results.append(run_cell(attack, column, seed, args))
        print(json.dumps(results[-1]), flush=True)
        path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (OUT / "attacks.md").write_text("\n".join(table(results)) + "\n")
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
