"""The round loop: config -> strategy -> rounds, with evaluation, checkpoints and outputs.

``run_experiment(grid, cfg)`` is the whole server side; the ServerApp entry point only parses
the run config. Tests and benchmarks call it with an in-process grid.
"""

from __future__ import annotations

import platform
import secrets
import time
import zipfile
from dataclasses import fields
from logging import ERROR, INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.serverapp import Grid
from flwr.supercore import log

from federated_data import DataSpec, Federation
from models.device import resolve_device
from models.zoo import build_model
from protocol import EXPERIMENT_KEY
from strategies.base import FederatedStrategy, RoundReport
from strategies.state import ServerState

from .config import SCHEMA, ExperimentConfig
from .methods import METHODS
from .outputs import ResumeError, RunDirectory
from .plots import plot_label_distribution, plot_rounds, save_image_grid
from .provenance import provenance
from .tracking import Trackers


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
        "max_reply_bytes": int(cfg.max_reply_mb * 2**20),
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
    _log_start(cfg, fed, strategy, run_dir, device)
    trackers = Trackers(cfg.trackers, run_dir.path, cfg.as_dict())
    state = strategy.initial_state()
    last = run_dir.checkpoints / "last.npz"
    if run_dir.resumed:
        state = _resume_state(run_dir, cfg, state)
    _share_experiment_id(strategy, state)
    rows = run_dir.read_metrics(state.round)
    metric, sign = strategy.score_metric, 1.0 if strategy.higher_is_better else -1.0
    best = max((sign * r[metric] for r in rows), default=-np.inf)
    summary: dict[str, Any] = {"status": "running", EXPERIMENT_KEY: state.extra[EXPERIMENT_KEY]}
    try:
        for server_round in range(state.round + 1, cfg.num_server_rounds + 1):
            t0 = time.time()
            state, report = strategy.train_round(grid, state, server_round)
            row = _round_row(strategy, state, report, fed, device, time.time() - t0)
            for name, images in strategy.take_images().items():
                save_image_grid(images, run_dir.samples / f"{name}-round{server_round}.png")
                trackers.log_images(name, images, server_round)
            rows.append(row)
            run_dir.append_metrics(row)  # metrics first: a resume cuts rows past the checkpoint
            state.save(last)
            if sign * row[metric] > best:
                best = sign * row[metric]
                state.save(run_dir.checkpoints / "best.npz")
            trackers.log_round(row, metric)
            _log_round(row, metric, cfg.num_server_rounds, time.time() - t0)
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
        trackers.close()
        try:  # plots are a convenience: a failure here must not hide the run's outcome
            plot_rounds(rows, run_dir.plots)
            counts = {i.partition_id: list(i.label_counts) for i in strategy.nodes.values()}
            plot_label_distribution(counts, run_dir.plots / "label_distribution.png")
        except Exception as err:
            log(WARNING, "Plots not written: %s: %s", type(err).__name__, err)
        _log_run_summary(summary)
    return summary


def _share_experiment_id(strategy: FederatedStrategy, state: ServerState) -> None:
    """Give the run an id kept in its checkpoint (new for a fresh run, the same after a
    resume) and send it in every message: nodes with a ``state-dir`` file their state under
    it, so a resumed run's nodes restore theirs (client_app/node_state.py)."""
    experiment_id = str(state.extra.setdefault(EXPERIMENT_KEY, secrets.token_hex(8)))
    strategy.node_config[EXPERIMENT_KEY] = experiment_id


def _resume_state(run_dir: RunDirectory, cfg: ExperimentConfig, fresh: ServerState) -> ServerState:
    """The checkpoint a resumed run continues from; refuses (never truncating the history)
    when completed rounds have no readable checkpoint or more rounds are done than asked."""
    last = run_dir.checkpoints / "last.npz"
    if not last.exists():
        if run_dir.has_metrics():
            raise ResumeError(
                f"resume=true: {run_dir.metrics_file} holds completed rounds but {last} is "
                "missing; restore the checkpoint, or start a new run without resume=true (it "
                "gets its own directory)"
            )
        return fresh  # stopped before its first round: nothing to continue from
    try:
        state = ServerState.load(last)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ResumeError(
            f"resume=true: the checkpoint {last} is unreadable ({type(err).__name__}: {err}); "
            "restore it (checkpoints/best.npz holds the best round), or start a new run"
        ) from err
    if state.round > cfg.num_server_rounds:
        raise ResumeError(
            f"resume=true: {run_dir.path} already completed {state.round} rounds; "
            f"num-server-rounds={cfg.num_server_rounds} asks for fewer"
        )
    log(INFO, "Resuming %s after round %d", run_dir.path, state.round)
    if METHODS[cfg.method].node_state:
        log(
            WARNING,
            "%s's nodes keep private state between rounds: nodes with a state-dir (bouquet grid, "
            "bouquet run --in-process, deploy.py) restore theirs; others (a Flower simulation) "
            "start afresh while the server continues from round %d",
            cfg.method,
            state.round,
        )
    return state


def _log_start(
    cfg: ExperimentConfig,
    fed: Federation,
    strategy: FederatedStrategy,
    run_dir: RunDirectory,
    device: torch.device,
) -> None:
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


def _round_row(
    strategy: FederatedStrategy,
    state: ServerState,
    report: RoundReport,
    fed: Federation,
    device: torch.device,
    seconds_round: float,
) -> dict[str, Any]:
    """Evaluate the round's models; the row ``metrics.jsonl`` gets for the round."""
    t1 = time.time()
    per_arch = strategy.evaluate(state, fed.test, device)
    metric = strategy.score_metric
    row: dict[str, Any] = {
        "round": state.round,
        metric: float(np.mean([m[metric] for m in per_arch.values()])),
    }
    if all("loss" in m for m in per_arch.values()):
        row["loss"] = float(np.mean([m["loss"] for m in per_arch.values()]))
    row.update(
        {
            "per-model": per_arch,
            "train": report.metrics,
            "num-sampled": report.num_sampled,
            "num-ok": report.num_ok,
            "dropped": {str(k): v for k, v in report.dropped.items()},
            "bytes-down": sum(b[0] for b in report.bytes.values()),
            "bytes-up": sum(b[1] for b in report.bytes.values()),
            "bytes-per-node": {str(k): v for k, v in sorted(report.bytes.items())},
            "seconds-round": round(seconds_round, 3),
            "seconds-evaluate": round(time.time() - t1, 3),
            # per node: round trip seen here, and the node's start-up, imports, data loading
            # and handler time (summed over the round's message phases)
            "seconds-per-node": {
                str(k): {name: round(v, 3) for name, v in sorted(sec.items())}
                for k, sec in sorted(report.seconds.items())
            },
        }
    )
    return row


def _log_round(row: dict[str, Any], metric: str, num_rounds: int, seconds: float) -> None:
    log(
        INFO,
        "[round %d/%d] %s %.4f loss %.4f | %d/%d replies | down %.2f MB up %.2f MB | %.1f s",
        row["round"],
        num_rounds,
        metric,
        row[metric],
        row.get("loss", float("nan")),
        row["num-ok"],
        row["num-sampled"],
        row["bytes-down"] / 1e6,
        row["bytes-up"] / 1e6,
        seconds,
    )


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
        "provenance": provenance(),
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
