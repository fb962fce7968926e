"""Round wall time of the same experiment in simulation and in a gRPC deployment, and where a
deployed round's fixed overhead goes.

Modes (``--nodes`` SuperNodes each, default 2, on this host, every server started here and
stopped by PID):
  in-process           ``bouquet run --in-process``: the same ServerApp loop and ClientApp
                       handlers without Flower's transport, one node after the other, with the
                       torch threads a deployed node gets (the host's cores / nodes)
  simulation           ``flwr run`` local simulation (Ray), via scripts/simulate.py
  deployed             scripts/deploy.py up: TLS + SuperNode authentication, subprocess
                       isolation, a warm worker beside each SuperNode (client_app/worker.py)
  deployed, no worker  the same with ``--no-warm-worker``: every message runs in the fresh
                       ClientApp process Flower starts for it (imports torch, loads the data)
  deployed, process    ``--isolation process`` (the docker-compose topology), warm workers
  deployed, fast node poll   warm workers, SuperNodes polling every 0.25 s instead of Flower's
                       hard-coded 3 s (``--node-poll-interval``, scripts/fast_supernode.py)
  deployed, Flower's polling   no worker and what Flower's defaults give: the ServerApp pulls
                       every 3 s (``poll-interval=3``, as ``send_and_receive``) and SuperExecs
                       poll every 1 s: the "before" of every cut

Experiments:
  minimal   digits, 10 local steps: a round is almost all overhead
  compute   Fashion-MNIST, cnn-small, enough local steps for >= 30 s of local compute a round

From metrics.jsonl, over the steady-state rounds (round >= 2; round 1 also discovers nodes):
  round      the round's message phase (the server's central evaluation is excluded)
  compute    a node's handler time minus its imports and data loading; the round's compute is
             the slowest node's in a deployment (the SuperNodes run in parallel) and the sum in
             the simulation (it ran one ClientApp at a time: 2 CPUs, 2 per ClientApp)
  overhead   round - compute, broken down for the node whose reply came last: start-up
             (process creation -> handler: interpreter, Flower, loading the app), imports,
             data loading, hand-off to the warm worker (serialising the message and context
             over its Unix socket), polling and transport (round trip - start-up - hand-off -
             handler) and the server's own work (round - that round trip)

Every mode runs ``--repeats`` times (fresh state each time); the table gives the median of
each column over the repeats and the range of the round time.

Writes benchmarks/results/deployment.{json,md}.     python -m benchmarks.deployment
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from client_app.threads import threads_per_worker

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results"
PY = sys.executable
NODES = 2

EXPERIMENTS = {
    "minimal": 'dataset="digits" local-steps=10 models="cnn-small"',
    "compute": 'dataset="fmnist" partitioner="iid" models="cnn-small" batch-size=32',
}
MODES = (
    "in-process",
    "simulation",
    "deployed",
    "deployed, no worker",
    "deployed, process",
    "deployed, fast node poll",
    "deployed, Flower's polling",
)
COMPUTE_MODES = MODES[1:4]  # minutes a run: the modes that answer "what does deploying cost"
NODE_POLL = 0.25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def run_mode(
    mode: str, run_config: str, timeout: float, nodes: int = NODES
) -> tuple[list[dict[str, Any]], float]:
    """Submit one run in ``mode`` from a fresh FLWR_HOME and state; returns its metrics rows
    and the submission's wall seconds (start to finished status)."""
    with tempfile.TemporaryDirectory(prefix="bouquet-deploy-bench-") as tmp:
        env = {
            **os.environ,
            "FLWR_HOME": f"{tmp}/flwr_home",
            "BOUQUET_OUTPUT_ROOT": tmp,
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
            "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}",
        }
        config = f'{run_config} run-name="bench" min-nodes={nodes}'
        if mode == "in-process":
            threads = str(threads_per_worker(0, nodes))  # what deploy.py gives each node
            t0 = time.time()
            overrides = [*shlex.split(config), f"num-partitions={nodes}"]
            _run(
                [PY, "-m", "bouquet.cli", "run", "--in-process", *overrides],
                {**env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
                timeout,
            )
            wall = time.time() - t0
        elif mode == "simulation":
            t0 = time.time()
            _run(
                [PY, "scripts/simulate.py", "--num-supernodes", str(nodes), "--run-config", config],
                env,
                timeout,
            )
            wall = time.time() - t0
        else:
            if mode == "deployed, Flower's polling":
                env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "1.0"  # Flower's default
                config += " poll-interval=3.0"  # Flower's send_and_receive sleeps 3 s
            isolation = "process" if mode == "deployed, process" else "subprocess"
            fast = ["--node-poll-interval", str(NODE_POLL)] if "fast" in mode else []
            cold = "no worker" in mode or "Flower's" in mode
            common = [
                *fast,
                *(["--no-warm-worker"] if cold else []),
                *("--state", f"{tmp}/state", "--certs", f"{tmp}/certs"),
                *("--port", str(_free_port()), "--fleet-address", f"127.0.0.1:{_free_port()}"),
                *("--node-port-base", str(_free_port()), "--isolation", isolation),
            ]
            _run([PY, "scripts/certs.py", "--out", f"{tmp}/certs", "--supernodes", str(nodes)],
                 env, 120)  # fmt: skip
            try:
                _run([PY, "scripts/deploy.py", *common, "up", "--supernodes", str(nodes)], env, 120)
                t0 = time.time()
                submit = ["--connection", "deploy-tls", "--run-config", config]
                _run([PY, "scripts/simulate.py", *submit], env, timeout)
                wall = time.time() - t0
            finally:
                subprocess.run([PY, "scripts/deploy.py", *common, "down"], cwd=ROOT, env=env)
        with open(Path(tmp) / "outputs" / "bench" / "metrics.jsonl") as f:
            return [json.loads(line) for line in f if line.strip()], wall


def breakdown(rows: list[dict[str, Any]], mode: str) -> dict[str, float]:
    """Mean steady-state round time and its parts (see the module docstring)."""
    parts: dict[str, list[float]] = {}
    for row in rows[1:]:
        nodes = row["seconds-per-node"].values()
        compute = [n["handler"] - n.get("imports", 0.0) - n.get("load", 0.0) for n in nodes]
        last = max(nodes, key=lambda n: n["round-trip"])
        round_s = row["seconds-round"]
        sequential = mode in ("simulation", "in-process")  # one ClientApp at a time
        contained = sum(compute) if sequential else max(compute)
        values = {
            "round": round_s,
            "compute": contained,
            "overhead": round_s - contained,
            "startup": last.get("startup", 0.0),
            "imports": last.get("imports", 0.0),
            "load": last.get("load", 0.0),
            "handoff": last.get("forward", 0.0),
            "polling": last["round-trip"]
            - last.get("startup", 0.0)
            - last.get("forward", 0.0)
            - last["handler"],
            "server": round_s - last["round-trip"],
        }
        for k, v in values.items():
            parts.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in parts.items()}


def median_row(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode's row: the median of every breakdown column over its repeats, the range of
    the round time, and every repeat kept."""
    keys = [k for k, v in repeats[0].items() if isinstance(v, float)]
    row: dict[str, Any] = {k: float(np.median([r[k] for r in repeats])) for k in keys}
    row["round-range"] = [min(r["round"] for r in repeats), max(r["round"] for r in repeats)]
    row["repeats"] = repeats
    return row


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| experiment | mode | rounds x repeats | s/round (median, range) "
        "| local compute s/round | overhead s/round | x simulation | x in-process | start-up "
        "| imports | data loading | hand-off | polling + transport | server "
        "| submit-to-finish s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def versus(mode: str, r: dict[str, Any]) -> str:
        base = [
            b["round"] for b in results if (b["experiment"], b["mode"]) == (r["experiment"], mode)
        ]
        return f"{r['round'] / base[0]:.2f}" if base else "-"

    for r in results:
        parts = ("startup", "imports", "load", "handoff", "polling", "server")
        # The simulation runs one ClientApp at a time in warm processes: no breakdown.
        warm = r["mode"] in ("simulation", "in-process")
        cells = ["-"] * 6 if warm else [f"{r[k]:.2f}" for k in parts]
        low, high = r["round-range"]
        lines.append(
            f"| {r['experiment']} | {r['mode']} | {r['rounds']} x {len(r['repeats'])} "
            f"| {r['round']:.2f} ({low:.2f}-{high:.2f}) | "
            f"{r['compute']:.2f} | {r['overhead']:.2f} | {versus('simulation', r)} "
            f"| {versus('in-process', r)} | {' | '.join(cells)} | "
            f"{r['wall']:.0f} |"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minimal-rounds", type=int, default=6)
    p.add_argument("--compute-rounds", type=int, default=3)
    p.add_argument("--compute-steps", type=int, default=3000, help="local steps, compute run")
    p.add_argument("--experiments", default="minimal,compute")
    p.add_argument("--repeats", type=int, default=3, help="runs of every mode (median shown)")
    p.add_argument("--nodes", type=int, default=NODES, help="SuperNodes (partitions) per run")
    p.add_argument("--out-name", default="deployment", help="results/<name>.{json,md}")
    p.add_argument(
        "--modes", default="", help="only these modes, separated by ';' (their names hold commas)"
    )
    p.add_argument("--timeout", type=float, default=1800.0)
    args = p.parse_args()
    only = [m.strip() for m in args.modes.split(";") if m.strip()]
    if unknown := set(only) - set(MODES):
        raise SystemExit(f"--modes: unknown {sorted(unknown)}; known: {list(MODES)}")
    results = []
    for experiment in args.experiments.split(","):
        rounds = args.minimal_rounds if experiment == "minimal" else args.compute_rounds
        config = f"{EXPERIMENTS[experiment]} num-server-rounds={rounds}"
        if experiment == "compute":
            config += f" local-steps={args.compute_steps}"
        modes = MODES if experiment == "minimal" else COMPUTE_MODES
        for mode in (m for m in modes if not only or m in only):
            repeats = []
            for _ in range(args.repeats):
                rows, wall = run_mode(mode, config, args.timeout, args.nodes)
                rep: dict[str, Any] = {"rounds": len(rows), "wall": wall, **breakdown(rows, mode)}
                rep["per-round"] = [r["seconds-round"] for r in rows]
                repeats.append(rep)
            row = {"experiment": experiment, "mode": mode, "rounds": len(rows)}
            row.update(median_row(repeats))
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "repeats"}), flush=True)
    meta = {
        "nodes": args.nodes,
        "run-configs": {e: EXPERIMENTS[e] for e in args.experiments.split(",")},
        "settings": vars(args),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python "
        f"{platform.python_version()}, Flower 1.39, all processes on one host (127.0.0.1)",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.out_name}.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2)
    )
    (OUT / f"{args.out_name}.md").write_text("\n".join(table(results)) + "\n")
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
