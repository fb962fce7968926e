"""FedH2L table: Fashion-MNIST, 10 clients with heterogeneous architectures.

Partitions: Dirichlet alpha in {0.1, 1.0} and 2 classes per client. Rows: FedH2L (complete
graph, align none), FedH2L (complete, first-order MLDG), FedH2L (ring, none), every client trained
alone (no seed set, no exchange), FedAvg with one shared architecture (cnn-small) and FedDF over
the same heterogeneous mix (10% public split). Accuracy on the official test set: per client for
FedH2L and alone (mean and worst client), of the global model(s) for FedAvg/FedDF; measured bytes
per round (down + up, serialised records; FedH2L's round 1 also carries the seed set, so the
steady-state rounds are reported separately).

    python benchmarks/fedh2l.py --rounds 5 --seeds 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from baselines import OUT, run_in_process

PARTITIONS: dict[str, dict[str, Any]] = {
    "dirichlet a=0.1": {"partitioner": "dirichlet", "alpha": 0.1},
    "dirichlet a=1.0": {"partitioner": "dirichlet", "alpha": 1.0},
    "2 classes/client": {"partitioner": "pathological", "classes-per-client": 2},
}
HETERO = {"models": "heterogeneous"}
ROWS: dict[str, dict[str, Any]] = {
    "FedH2L complete, align none": {"method": "fedh2l", **HETERO},
    "FedH2L complete, align mldg": {"method": "fedh2l", "align": "mldg", **HETERO},
    "FedH2L ring, align none": {"method": "fedh2l", "topology": "ring", **HETERO},
    "alone (no exchange)": {"method": "fedh2l", "seed-per-class": 0, "h2l-lambda": 0.0, **HETERO},
    "FedAvg, shared cnn-small": {"method": "fedavg", "models": "cnn-small"},
    "FedDF, heterogeneous": {"method": "feddf", "public-fraction": 0.1, **HETERO},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--local-steps", type=int, default=50)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--seeds", default="0")
    args = p.parse_args()
    results = []
    for part_name, part in PARTITIONS.items():
        for row_name, row in ROWS.items():
            for seed in (int(s) for s in args.seeds.split(",")):
                name = f"h2l-{part_name}-{row_name}-s{seed}".replace(" ", "_").replace("/", "-")
                s = run_in_process(
                    {
                        **part,
                        **row,
                        "seed": seed,
                        "num-server-rounds": args.rounds,
                        "local-steps": args.local_steps,
                    },
                    name,
                    args.clients,
                )
                rows = [json.loads(x) for x in Path(s["paths"]["metrics"]).read_text().splitlines()]
                accs = [m["accuracy"] for m in s["final-per-model"].values()]
                results.append(
                    {
                        "partition": part_name,
                        "row": row_name,
                        "seed": seed,
                        "mean-accuracy": float(np.mean(accs)),
                        "worst-accuracy": float(np.min(accs)),
                        "bytes-round-1": rows[0]["bytes-down"] + rows[0]["bytes-up"],
                        "bytes-later-rounds": float(
                            np.mean([r["bytes-down"] + r["bytes-up"] for r in rows[1:]])
                        ),
                        "seconds": s["wall-seconds"],
                    }
                )
                print(json.dumps(results[-1]), flush=True)
    (OUT / "fedh2l.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    lines = [
        "| partition | method | mean acc | worst client | bytes/round (round 1) | "
        "bytes/round (later) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['partition']} | {r['row']} | {r['mean-accuracy']:.3f} | "
            f"{r['worst-accuracy']:.3f} | {r['bytes-round-1'] / 1e6:.3f} MB | "
            f"{r['bytes-later-rounds'] / 1e6:.3f} MB |"
        )
    (OUT / "fedh2l.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
