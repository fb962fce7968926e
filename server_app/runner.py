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
from models.fid import InceptionFeatures
from models.generators import GeneratorConfig
from models.image_quality import train_judge
from models.mmd import gaussian_epsilon, noise_for_epsilon
from models.teacher_cache import teacher_features
from models.teachers import LogitsFileTeacher, build_teacher
from models.zoo import build_model
from strategies.base import FederatedStrategy
from strategies.fedavg import FedAvg
from strategies.feddf import FedDF
from strategies.fedh2l import FedH2L
from strategies.fedprox import FedProx
from strategies.fmd import FMD
from strategies.mosaic import Mosaic
from strategies.prism import PRISM, FedAvgGenerator
from strategies.state import ServerState

from .config import GENERATIVE_METHODS, ExperimentConfig, mosaic_distill_round
from .outputs import RunDirectory
from .plots import plot_label_distribution, plot_rounds, save_image_grid

# What a Mosaic client needs to build its generator and its prototypes.
MOSAIC_NODE_KEYS = (
    "generator",
    "generator-z-dim",
    "generator-width",
    "generator-steps",
    "generator-batch-size",
    "generator-lr",
    "generator-diversity-weight",
    "generator-diversity-prior",
    "generator-aux-model",
    "generator-aux-steps",
    "prototypes-per-class",
    "prototype-min-cluster",
    "prototype-confidence",
)


# What a PRISM (or dense-baseline) client needs besides lr, batch-size and local-steps.
PRISM_NODE_KEYS = ("prism-generator", "prism-loss", "prism-tracker-lr", "prism-dp-clip")


def data_spec(cfg: ExperimentConfig) -> DataSpec:
    """The data part of the run config (DataSpec's fields share the config's names)."""
    return DataSpec(**{f.name: getattr(cfg, f.name) for f in fields(DataSpec)})


def node_config(cfg: ExperimentConfig, fed: Federation) -> dict[str, Any]:
    """What every message tells a node about the run (nodes never read the YAML)."""
    return {
        **data_spec(cfg).to_config(),
        "input-shape": list(fed.input_shape),
        "num-classes": fed.num_classes,
        "models": cfg.models,
        "local-epochs": cfg.local_epochs,
        "local-steps": cfg.local_steps,
        "batch-size": cfg.batch_size,
        "lr": cfg.lr,
        "momentum": cfg.momentum,
        "weight-decay": cfg.weight_decay,
        "h2l-lambda": cfg.h2l_lambda,
        "h2l-temperature": cfg.h2l_temperature,
        "align": cfg.align,
        "align-weight": cfg.align_weight,
        "teacher": cfg.teacher,
        "teacher-path": cfg.teacher_path,
        "teacher-image-size": cfg.teacher_image_size,
        "clip-model": cfg.clip_model,
        "kd-mu": cfg.kd_mu,
        "kd-temperature": cfg.kd_temperature,
        # Only Mosaic's messages carry its generator settings (a few hundred bytes each).
        **{
            key: getattr(cfg, key.replace("-", "_"))
            for key in (MOSAIC_NODE_KEYS if cfg.method == "mosaic" else ())
        },
        **(prism_node_config(cfg) if cfg.method in GENERATIVE_METHODS else {}),
    }


def prism_node_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """PRISM's client settings: the generator (its frozen weights regrow from the run seed),
    the loss and, with DP, the noise multiplier that makes one release (epsilon, delta)-DP."""
    noise = (
        noise_for_epsilon(cfg.prism_dp_epsilon, cfg.prism_dp_delta) if cfg.prism_dp_epsilon else 0.0
    )
    return {
        **{key: getattr(cfg, key.replace("-", "_")) for key in PRISM_NODE_KEYS},
        "prism-weights-seed": cfg.seed,
        "prism-dp-noise": noise,
    }


def build_strategy(
    cfg: ExperimentConfig, fed: Federation, device: torch.device
) -> FederatedStrategy:
    common: dict[str, Any] = {
        "model_fn": lambda arch: build_model(arch, fed.input_shape, fed.num_classes),
        "node_config": node_config(cfg, fed),
        "min_nodes": cfg.min_nodes,
        "clients_per_round": cfg.clients_per_round,
        "round_timeout": cfg.round_timeout,
        "poll_interval": cfg.poll_interval,
        "seed": cfg.seed,
    }
    if cfg.method == "fedavg":
        return FedAvg(**common)
    if cfg.method == "fedprox":
        return FedProx(proximal_mu=cfg.proximal_mu, **common)
    if cfg.method == "fedh2l":
        return FedH2L(
            num_classes=fed.num_classes,
            seed_per_class=cfg.seed_per_class,
            topology=cfg.topology,
            degree=cfg.topology_degree,
            relay=cfg.relay,
            posterior_dtype=cfg.posterior_dtype,
            public_x=fed.public.x if cfg.seed_source == "public" else None,
            **common,
        )
    if cfg.method in GENERATIVE_METHODS:
        return build_generative(cfg, fed, common)
    distillation: dict[str, Any] = {
        "public_x": fed.public.x,
        "distill_steps": cfg.distill_steps,
        "distill_lr": cfg.distill_lr,
        "distill_batch_size": cfg.distill_batch_size,
        "temperature": cfg.distill_temperature,
        "device": device,
    }
    if cfg.method == "fmd":
        return FMD(**fmd_teacher_inputs(cfg, fed, device), **distillation, **common)
    if cfg.method == "mosaic":
        del distillation["public_x"]  # data-free: distils on generator samples
        return Mosaic(
            num_classes=fed.num_classes,
            input_shape=fed.input_shape,
            generator_config=GeneratorConfig.from_config(common["node_config"]),
            test=fed.test,
            distill_round=mosaic_distill_round(cfg),
            prototypes=cfg.prototypes,
            prototypes_per_class=cfg.prototypes_per_class,
            meta_steps=cfg.meta_steps,
            meta_lr=cfg.meta_lr,
            meta_ema=cfg.meta_ema,
            mosaic_distill_steps=cfg.mosaic_distill_steps,
            mosaic_distill_lr=cfg.mosaic_distill_lr,
            samples_per_generator=cfg.samples_per_generator,
            finetune_lr_scale=cfg.mosaic_finetune_lr_scale,
            pool_size=cfg.mosaic_pool_size,
            **distillation,
            **common,
        )
    return FedDF(**distillation, **common)


def build_generative(
    cfg: ExperimentConfig, fed: Federation, common: dict[str, Any]
) -> FederatedStrategy:
    """PRISM or its dense FedAvg baseline, with the feature judge that scores samples."""
    source = fed.source
    t0 = time.time()
    judge, judge_info = train_judge(
        source.x_train,
        source.y_train,
        fed.input_shape,
        fed.num_classes,
        cache_dir=fed.cache_dir,
        data_key=fed.data_key("train"),
        steps=cfg.prism_judge_steps,
        seed=cfg.seed,
    )
    log(INFO, "Feature judge ready in %.1f s: %s", time.time() - t0, judge_info)
    generative: dict[str, Any] = {
        "channels": fed.input_shape[0],
        "judge": judge,
        "reference": fed.test,
        "floor_reference": source.x_train[fed.pool],
        "generator_size": cfg.prism_generator,
        "eval_samples": cfg.prism_eval_samples,
        "sample_every": cfg.prism_sample_every,
        "num_rounds": cfg.num_server_rounds,
        # the real FID needs torchvision and Inception weights (internet once): opt-in
        "fid_features": InceptionFeatures(download=cfg.download) if cfg.prism_fid else None,
    }
    noise = common["node_config"]["prism-dp-noise"]
    if noise:
        generative["dp"] = {
            "epsilon": gaussian_epsilon(noise, cfg.prism_dp_delta),
            "delta": cfg.prism_dp_delta,
            "noise-multiplier": noise,
            "clip": cfg.prism_dp_clip,
            "mechanism": "Gaussian, one release of each client's feature mean and second moment",
            "accountant": "RDP (dp-accounting)",
        }
    if cfg.method == "fedavg-generator":
        return FedAvgGenerator(**generative, **common)
    return PRISM(
        aggregation=cfg.prism_aggregation,
        downlink=cfg.prism_downlink,
        final_mask=cfg.prism_final_mask,
        **generative,
        **common,
    )


def fmd_teacher_inputs(
    cfg: ExperimentConfig, fed: Federation, device: torch.device
) -> dict[str, Any]:
    """The server's teacher and its features of the test (and, if used, public) split."""
    teacher = build_teacher(
        cfg.teacher,
        dataset=cfg.dataset,
        input_shape=fed.input_shape,
        num_classes=fed.num_classes,
        path=cfg.teacher_path,
        image_size=cfg.teacher_image_size,
        clip_model=cfg.clip_model,
        device=device,
    )
    t0 = time.time()
    cache = fed.cache_dir / "teachers"
    if isinstance(teacher, LogitsFileTeacher):
        test_features = teacher.test_logits  # None: the teacher's accuracy is not reported
    else:
        test = fed.test
        test_features, _ = teacher_features(
            teacher, test.x, np.arange(len(test)), fed.data_key("test"), cache
        )
    public_features = None
    if cfg.probe == "server" or cfg.fmd_server_distill == "teacher":
        public = fed.public
        public_features, _ = teacher_features(
            teacher, public.x, fed.public_idx, fed.data_key("train"), cache
        )
    log(INFO, "Teacher %s: server-side features ready in %.1f s", teacher.name, time.time() - t0)
    return {
        "teacher": teacher,
        "test_features": test_features,
        "test_labels": fed.test.y,
        "probe": cfg.probe,
        "probe_rounds": cfg.probe_rounds,
        "probe_local_steps": cfg.probe_local_steps,
        "probe_lr": cfg.probe_lr,
        "public_features": public_features,
        # probe=server trains the head on these labels: the server then holds labelled data.
        "public_labels": fed.public.y if cfg.probe == "server" else None,
        "server_distill": cfg.fmd_server_distill,
    }


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
