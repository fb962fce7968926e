"""Attacks table: FedAvg with each aggregation setting when 1 of 10 clients attacks.

Fashion-MNIST, 10 clients, Dirichlet alpha = 0.5, cnn-small everywhere; partition 0 is the
attacker, rewriting its own train replies (in-process grid, real ServerApp loop and ClientApp):

- ``inflate``: reports num-examples = 10**12 (a protocol violation: dropped by validation);
- ``sign-flip-10`` / ``sign-flip-100``: sends global - k * (its honest update);
- ``weights-1e6``: every float weight set to 1e6 (finite: passes validation).

Resumable: finished cells are kept in benchmarks/results/attacks.json and skipped; the table
(attacks.md) covers the cells finished so far.

    python -m benchmarks.attacks --seeds 0,1,2
    python -m benchmarks.attacks --table-only
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord

from benchmarks.harness import OUT, run_in_process

ATTACKS = ("clean", "inflate", "sign-flip-10", "sign-flip-100", "weights-1e6")
AGGREGATIONS = ("mean", "trimmed-mean", "median", "multi-krum")
ATTACKER = 0


def _arrays(record: Any) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in record.items()}


def _attack(name: str) -> Callable[[Message, Message], Message] | None:
    """A reply hook: the attacker's train replies rewritten by ``name``."""
    if name == "clean":
        return None

    def hook(msg: Message, reply: Message) -> Message:
        if msg.metadata.message_type != "train" or not reply.has_content():
            return reply
        content = reply.content
        metrics = content.metric_records["metrics"]
        if metrics.get("partition-id") != ATTACKER:
            return reply
        honest, sent = _arrays(content["arrays"]), _arrays(msg.content["arrays"])
        if name == "inflate":
            content["metrics"] = MetricRecord({**metrics, "num-examples": 10**12})
        else:
            for k, v in honest.items():
                if v.dtype != np.float32:
                    continue
                if name == "weights-1e6":
                    v[...] = 1e6
                else:
                    scale = float(name.rsplit("-", 1)[1])
                    v[...] = sent[k] - scale * (v - sent[k])
            content["arrays"] = ArrayRecord({k: Array(v) for k, v in honest.items()})
        return Message(content, reply_to=msg)

    return hook


def run_cell(attack: str, aggregation: str, seed: int, args: argparse.Namespace) -> dict:
    settings = {
        "alpha": 0.5,
        "num-server-rounds": args.rounds,
        "local-steps": args.local_steps,
        "aggregation": aggregation,
        "seed": seed,
    }
    t0 = time.time()
    try:
        summary = run_in_process(
            settings,
            f"attacks-{attack}-{aggregation}-s{seed}",
            args.clients,
            reply_hook=_attack(attack),
        )
        accuracy, status = summary["final-accuracy"], "completed"
    except Exception as err:  # the attack stopped the run: that is the result
        accuracy, status = None, f"failed: {type(err).__name__}: {str(err)[:200]}"
    return {
        "attack": attack,
        "aggregation": aggregation,
        "seed": seed,
        "final-accuracy": accuracy,
        "status": status,
        "seconds": round(time.time() - t0, 1),
    }


def table(results: list[dict]) -> list[str]:
    seeds = sorted({r["seed"] for r in results})
    lines = [
        f"Final test accuracy, seeds {', '.join(map(str, seeds))} (mean; per seed in brackets; "
        "'failed' = the run stopped).",
        "",
        "| attack | " + " | ".join(AGGREGATIONS) + " |",
        "|---|" + "---|" * len(AGGREGATIONS),
    ]
    for attack in ATTACKS:
        cells = []
        for agg in AGGREGATIONS:
            rows = [r for r in results if (r["attack"], r["aggregation"]) == (attack, agg)]
            rows.sort(key=lambda r: r["seed"])
            if not rows:
                cells.append("-")
                continue
            per = [
                "failed" if r["final-accuracy"] is None else f"{r['final-accuracy']:.3f}"
                for r in rows
            ]
            accs = [r["final-accuracy"] for r in rows if r["final-accuracy"] is not None]
            mean = f"{np.mean(accs):.3f}" if len(accs) == len(rows) else "failed"
            cells.append(f"{mean} ({', '.join(per)})")
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--local-steps", type=int, default=50)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--seeds", default="0")
    p.add_argument("--table-only", action="store_true", help="rewrite attacks.md from the json")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "attacks.json"
    results: list[dict] = json.loads(path.read_text())["results"] if path.exists() else []
    done = {(r["attack"], r["aggregation"], r["seed"]) for r in results}
    meta = {
        "data": "Fashion-MNIST, Dirichlet alpha 0.5, cnn-small, partition 0 attacks",
        "clients": args.clients,
        "rounds": args.rounds,
        "local-steps": args.local_steps,
        "machine": f"{platform.machine()}, python {platform.python_version()}",
    }
    seeds = [] if args.table_only else [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        for attack in ATTACKS:
            for agg in AGGREGATIONS:
                if (attack, agg, seed) in done:
                    continue
                results.append(run_cell(attack, agg, seed, args))
                print(json.dumps(results[-1]), flush=True)
                path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (OUT / "attacks.md").write_text("\n".join(table(results)) + "\n")
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
