"""The round loop: config -> strategy -> rounds, with evaluation, checkpoints and outputs.

``run_experiment(grid, cfg)`` is the whole server side; the ServerApp entry point only parses
the run config. Tests and benchmarks call it with an in-process grid.
"""

from __future__ import annotations

import platform
import time
from dataclasses import fields
from logging import ERROR, INFO
from typing import Any

import numpy as np
import torch
from flwr.serverapp import Grid
from flwr.supercore import log

from federated_data import DataSpec, Federation
from models.device import resolve_device
from models.zoo import build_model
from strategies.base import FederatedStrategy
from strategies.state import ServerState

from .config import SCHEMA, ExperimentConfig
from .methods import METHODS
from .outputs import RunDirectory
from .plots import plot_label_distribution, plot_rounds, save_image_grid


def data_spec(cfg: ExperimentConfig) -> DataSpec:
    """The data part of the run config (DataSpec's fields share the config's names)."""
    return DataSpec(**{f.name: getattr(cfg, f.name) for f in fields(DataSpec)})


def node_config(cfg: ExperimentConfig, fed: Federation) -> dict[str, Any]:
    """What every message tells a node about the run (nodes never read the YAML): the data
    spec, the shapes, every ``travel="all"`` setting, the method's own ``travel="method"``
    settings and the values its nodes need derived from them."""
    method = METHODS[cfg.method]
    own = {s.key for section in method.sections for s in section.settings}
    travelling = [
        key
        for key, s in SCHEMA.items()
        if s.travel == "all" or (s.travel == "method" and key in own)
    ]
    return {
        **data_spec(cfg).to_config(),
        "input-shape": list(fed.input_shape),
        "num-classes": fed.num_classes,
        **{key: getattr(cfg, SCHEMA[key].attribute) for key in travelling},
        **(method.node_extras(cfg) if method.node_extras else {}),
    }


def build_strategy(
    cfg: ExperimentConfig, fed: Federation, device: torch.device
) -> FederatedStrategy:
    """The run's strategy, built by its method's registered builder."""
    common: dict[str, Any] = {
        "model_fn": lambda arch: build_model(arch, fed.input_shape, fed.num_classes),
        "node_config": node_config(cfg, fed),
        "min_nodes": cfg.min_nodes,
        "clients_per_round": cfg.clients_per_round,
        "round_timeout": cfg.round_timeout,
        "poll_interval": cfg.poll_interval,
        "seed": cfg.seed,
    }
    return METHODS[cfg.method].build(cfg, fed, device, common)


def run_experiment(grid: Grid, cfg: ExperimentConfig) -> dict[str, Any]:
    """Run (or resume) an experiment to completion; return its summary."""
    started = time.time()
    device = resolve_device("")
    fed = Federation(data_spec(cfg))  # loads data before round 1: a missing dataset fails here
    strategy = build_strategy(cfg, fed, device)
    run_dir = RunDirectory(cfg)
    log(
        INFO,
        "bouquet: %s on %s (%s), models %s, %d rounds -> %s",
        cfg.method,
        cfg.dataset,
        fed.source.note,
        cfg.models,
        cfg.num_server_rounds,
        run_dir.path,
    )
    log(
        INFO,
        "host %s, python %s, torch %s, device %s",
        platform.node(),
        platform.python_version(),
        torch.__version__,
        device,
    )
    log(INFO, "Strategy settings:")
    strategy.summary()

    state = strategy.initial_state()
    last = run_dir.checkpoints / "last.npz"
    if run_dir.resumed and last.exists():
        state = ServerState.load(last)
        log(INFO, "Resuming %s after round %d", run_dir.path, state.round)
    rows = run_dir.read_metrics(state.round)
    metric, sign = strategy.score_metric, 1.0 if strategy.higher_is_better else -1.0
    best = max((sign * r[metric] for r in rows), default=-np.inf)
    summary: dict[str, Any] = {"status": "running"}
    try:
        for server_round in range(state.round + 1, cfg.num_server_rounds + 1):
            t0 = time.time()
            state, report = strategy.train_round(grid, state, server_round)
            t1 = time.time()
            per_arch = strategy.evaluate(state, fed.test, device)
            score = float(np.mean([m[metric] for m in per_arch.values()]))
            bytes_down = sum(b[0] for b in report.bytes.values())
            bytes_up = sum(b[1] for b in report.bytes.values())
            row: dict[str, Any] = {"round": server_round, metric: score}
            if all("loss" in m for m in per_arch.values()):
                row["loss"] = float(np.mean([m["loss"] for m in per_arch.values()]))
            row.update(
                {
                    "per-model": per_arch,
                    "train": report.metrics,
                    "num-sampled": report.num_sampled,
                    "num-ok": report.num_ok,
                    "dropped": {str(k): v for k, v in report.dropped.items()},
                    "bytes-down": bytes_down,
                    "bytes-up": bytes_up,
                    "bytes-per-node": {str(k): v for k, v in sorted(report.bytes.items())},
                    "seconds-round": round(t1 - t0, 3),
                    "seconds-evaluate": round(time.time() - t1, 3),
                    # per node: round trip seen here, and the node's start-up, imports, data
                    # loading and handler time (summed over the round's message phases)
                    "seconds-per-node": {
                        str(k): {name: round(v, 3) for name, v in sorted(sec.items())}
                        for k, sec in sorted(report.seconds.items())
                    },
                }
            )
            for name, images in strategy.take_images().items():
                save_image_grid(images, run_dir.samples / f"{name}-round{server_round}.png")
            rows.append(row)
            run_dir.append_metrics(row)  # metrics first: a resume cuts rows past the checkpoint
            state.save(last)
            if sign * score > best:
                best = sign * score
                state.save(run_dir.checkpoints / "best.npz")
            log(
                INFO,
                "[round %d/%d] %s %.4f loss %.4f | %d/%d replies | down %.2f MB "
                "up %.2f MB | %.1f s",
                server_round,
                cfg.num_server_rounds,
                metric,
                score,
                row.get("loss", float("nan")),
                report.num_ok,
                report.num_sampled,
                bytes_down / 1e6,
                bytes_up / 1e6,
                time.time() - t0,
            )
        summary["status"] = "completed"
        if state.round:
            summary["export"] = strategy.export(state, run_dir.path)
    except Exception as err:
        summary.update(status="failed", error=f"{type(err).__name__}: {err}")
        log(ERROR, "Run failed after round %d: %s", state.round, summary["error"])
        raise
    finally:
        summary.update(_summarise(cfg, run_dir, rows, strategy, fed, time.time() - started))
        run_dir.write_summary(summary)
        plot_rounds(rows, run_dir.plots)
        counts = {i.partition_id: list(i.label_counts) for i in strategy.nodes.values()}
        plot_label_distribution(counts, run_dir.plots / "label_distribution.png")
        _log_run_summary(summary)
    return summary


def _summarise(
    cfg: ExperimentConfig,
    run_dir: RunDirectory,
    rows: list[dict[str, Any]],
    strategy: FederatedStrategy,
    fed: Federation,
    seconds: float,
) -> dict[str, Any]:
    import flwr

    final = rows[-1] if rows else {}
    metric, sign = strategy.score_metric, 1.0 if strategy.higher_is_better else -1.0
    best = max(rows, key=lambda r: sign * r[metric]) if rows else {}
    return {
        "run-dir": str(run_dir.path),
        "rounds-completed": final.get("round", 0),
        "num-server-rounds": cfg.num_server_rounds,
        f"final-{metric}": final.get(metric),
        "final-loss": final.get("loss"),
        "final-per-model": final.get("per-model"),
        f"best-{metric}": best.get(metric),
        "best-round": best.get("round"),
        "total-bytes-down": sum(r["bytes-down"] for r in rows),
        "total-bytes-up": sum(r["bytes-up"] for r in rows),
        "seconds": round(seconds, 2),
        "models": strategy.model_costs(fed.input_shape),
        **strategy.extra_summary(fed.input_shape),
        "data": fed.source.note,
        "paths": {
            "config": str(run_dir.path / "config.yaml"),
            "metrics": str(run_dir.metrics_file),
            "plots": str(run_dir.plots),
            "checkpoint-last": str(run_dir.checkpoints / "last.npz"),
            "checkpoint-best": str(run_dir.checkpoints / "best.npz"),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "flwr": flwr.__version__,
            "host": platform.node(),
        },
    }


def _log_run_summary(summary: dict[str, Any]) -> None:
    log(
        INFO,
        "RUN SUMMARY: %s after %s/%s rounds in %.1f s",
        summary["status"],
        summary["rounds-completed"],
        summary["num-server-rounds"],
        summary["seconds"],
    )
    for metric in ("accuracy", "fd"):
        if summary.get(f"final-{metric}") is not None:
            log(
                INFO,
                "  final %s %.4f (best %.4f at round %s)",
                metric,
                summary[f"final-{metric}"],
                summary[f"best-{metric}"],
                summary["best-round"],
            )
    for name, path in summary["paths"].items():
        log(INFO, "  %-16s %s", name, path)
