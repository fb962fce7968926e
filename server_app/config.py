"""Experiment configuration: defaults, YAML experiments, validation before the first round.

Precedence, lowest first: the defaults below (mirrored in ``pyproject.toml``), then the YAML
file named by ``experiment``, then every value set explicitly (``--run-config``), even one
equal to its default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from federated_data.partition import PARTITIONERS
from federated_data.sources import SOURCES
from models.assignment import parse_assignment
from models.generators import DIVERSITY_PRIORS, GENERATOR_KINDS
from models.masked import GENERATOR_SIZES
from models.mmd import PRISM_LOSSES
from models.teachers import TEACHERS
from models.zoo import ARCHITECTURES
from strategies.fedh2l import ALIGNMENTS, POSTERIOR_DTYPES, RELAYS
from strategies.fmd import PROBES, SERVER_DISTILL
from strategies.mosaic import PROTOTYPE_KINDS
from strategies.prism import AGGREGATIONS, DOWNLINKS, FINAL_MASKS
from strategies.topology import TOPOLOGIES

METHODS = ("fedavg", "fedprox", "feddf", "fedh2l", "fmd", "mosaic", "prism", "fedavg-generator")
GENERATIVE_METHODS = ("prism", "fedavg-generator")
APP_DIR = Path(__file__).resolve().parent.parent

DEFAULTS: dict[str, Any] = {
    "experiment": "",
    "method": "fedavg",
    "dataset": "fmnist",
    "partitioner": "dirichlet",
    "alpha": 0.5,
    "classes-per-client": 2,
    "shards-per-client": 2,
    "min-partition-size": 0,
    "num-partitions": 0,
    "train-subset": 0,
    "public-fraction": 0.0,
    "models": "cnn-small",
    "num-server-rounds": 8,
    "clients-per-round": 0,
    "min-nodes": 2,
    "round-timeout": 600.0,
    "poll-interval": 0.1,
    "local-epochs": 0,
    "local-steps": 50,
    "batch-size": 32,
    "lr": 0.05,
    "momentum": 0.9,
    "weight-decay": 0.0,
    "proximal-mu": 0.01,
    "distill-steps": 200,
    "distill-lr": 0.001,
    "distill-batch-size": 64,
    "distill-temperature": 1.0,
    "seed-per-class": 10,
    "seed-source": "donated",
    "h2l-lambda": 1.0,
    "h2l-temperature": 1.0,
    "topology": "complete",
    "topology-degree": 2,
    "relay": "loo-mean",
    "posterior-dtype": "float32",
    "align": "none",
    "align-weight": 0.01,
    "teacher": "efficientnet-lite0",
    "teacher-path": "",
    "teacher-image-size": 64,
    "clip-model": "ViT-B-32",
    "probe": "federated",
    "probe-rounds": 30,
    "probe-local-steps": 5,
    "probe-lr": 2.0,
    "kd-mu": 0.5,
    "kd-temperature": 4.0,
    "fmd-server-distill": "none",
    "mosaic-distill-round": 0,
    "mosaic-one-shot": False,
    "generator": "unconditional",
    "generator-z-dim": 100,
    "generator-width": 32,
    "generator-steps": 400,
    "generator-batch-size": 64,
    "generator-lr": 0.0002,
    "generator-diversity-weight": 5.0,
    "generator-diversity-prior": "client",
    "generator-aux-model": "cnn-small",
    "generator-aux-steps": 200,
    "prototypes": "synthetic",
    "prototypes-per-class": 10,
    "prototype-min-cluster": 5,
    "prototype-confidence": 0.8,
    "meta-steps": 300,
    "meta-lr": 0.001,
    "meta-ema": 0.99,
    "mosaic-distill-steps": 300,
    "mosaic-distill-lr": 0.0001,
    "samples-per-generator": 32,
    "mosaic-finetune-lr-scale": 0.01,
    "mosaic-pool-size": 2000,
    "prism-generator": "small",
    "prism-loss": "efficientnet-lite0",
    "prism-tracker-lr": 1e-5,
    "prism-aggregation": "mada",
    "prism-downlink": "scores",
    "prism-final-mask": "sample",
    "prism-dp-epsilon": 0.0,
    "prism-dp-delta": 1e-5,
    "prism-dp-clip": 1.0,
    "prism-eval-samples": 2000,
    "prism-sample-every": 5,
    "prism-judge-steps": 2000,
    "prism-fid": False,
    "seed": 0,
    "output-dir": "outputs",
    "run-name": "",
    "resume": False,
    "data-dir": "",
    "download": False,
}

CHOICES = {
    "method": METHODS,
    "dataset": SOURCES,
    "partitioner": PARTITIONERS,
    "topology": TOPOLOGIES,
    "relay": RELAYS,
    "posterior-dtype": POSTERIOR_DTYPES,
    "align": ALIGNMENTS,
    "seed-source": ("donated", "public"),
    "teacher": TEACHERS,
    "probe": PROBES,
    "fmd-server-distill": SERVER_DISTILL,
    "generator": GENERATOR_KINDS,
    "generator-diversity-prior": DIVERSITY_PRIORS,
    "generator-aux-model": tuple(ARCHITECTURES),
    "prototypes": PROTOTYPE_KINDS,
    "prism-generator": tuple(GENERATOR_SIZES),
    "prism-loss": PRISM_LOSSES,
    "prism-aggregation": AGGREGATIONS,
    "prism-downlink": DOWNLINKS,
    "prism-final-mask": FINAL_MASKS,
}
# key: (lowest, highest, inclusive low) -- None means unbounded
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "alpha": (0.0, None, False),
    "classes-per-client": (1, None, True),
    "shards-per-client": (1, None, True),
    "min-partition-size": (0, None, True),
    "num-partitions": (0, None, True),
    "train-subset": (0, None, True),
    "public-fraction": (0.0, 0.9, True),
    "num-server-rounds": (1, None, True),
    "clients-per-round": (0, None, True),
    "min-nodes": (1, None, True),
    "round-timeout": (0.0, None, False),
    "poll-interval": (0.0, 60.0, False),
    "local-epochs": (0, None, True),
    "local-steps": (0, None, True),
    "batch-size": (1, None, True),
    "lr": (0.0, None, False),
    "momentum": (0.0, 1.0, True),
    "weight-decay": (0.0, None, True),
    "proximal-mu": (0.0, None, True),
    "distill-steps": (0, None, True),
    "distill-lr": (0.0, None, False),
    "distill-batch-size": (2, None, True),
    "distill-temperature": (0.0, None, False),
    "seed-per-class": (0, None, True),
    "h2l-lambda": (0.0, None, True),
    "h2l-temperature": (0.0, None, False),
    "topology-degree": (2, None, True),
    "align-weight": (0.0, None, True),
    "teacher-image-size": (16, None, True),
    "probe-rounds": (0, None, True),
    "probe-local-steps": (1, None, True),
    "probe-lr": (0.0, None, False),
    "kd-mu": (0.0, 1.0, True),
    "kd-temperature": (0.0, None, False),
    "mosaic-distill-round": (0, None, True),
    "generator-z-dim": (1, None, True),
    "generator-width": (1, None, True),
    "generator-steps": (1, None, True),
    "generator-batch-size": (2, None, True),
    "generator-lr": (0.0, None, False),
    "generator-diversity-weight": (0.0, None, True),
    "generator-aux-steps": (0, None, True),
    "prototypes-per-class": (1, None, True),
    "prototype-min-cluster": (1, None, True),
    "prototype-confidence": (0.0, 1.0, True),
    "meta-steps": (1, None, True),
    "meta-lr": (0.0, None, False),
    "meta-ema": (0.0, 1.0, True),
    "mosaic-distill-steps": (0, None, True),
    "mosaic-distill-lr": (0.0, None, False),
    "samples-per-generator": (1, None, True),
    "mosaic-finetune-lr-scale": (0.0, 1.0, False),
    "mosaic-pool-size": (2, None, True),
    "prism-tracker-lr": (0.0, None, False),
    "prism-dp-epsilon": (0.0, None, True),
    "prism-dp-delta": (0.0, 1.0, False),
    "prism-dp-clip": (0.0, None, False),
    "prism-eval-samples": (10, None, True),
    "prism-sample-every": (0, None, True),
    "prism-judge-steps": (1, None, True),
}


class ConfigError(ValueError):
    """An invalid setting; the message names the key and what is allowed."""


@dataclass(frozen=True)
class ExperimentConfig:
    """The fully resolved settings of one run (attribute = run-config key with ``_``)."""

    experiment: str
    method: str
    dataset: str
    partitioner: str
    alpha: float
    classes_per_client: int
    shards_per_client: int
    min_partition_size: int
    num_partitions: int
    train_subset: int
    public_fraction: float
    models: str
    num_server_rounds: int
    clients_per_round: int
    min_nodes: int
    round_timeout: float
    poll_interval: float
    local_epochs: int
    local_steps: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    proximal_mu: float
    distill_steps: int
    distill_lr: float
    distill_batch_size: int
    distill_temperature: float
    seed_per_class: int
    seed_source: str
    h2l_lambda: float
    h2l_temperature: float
    topology: str
    topology_degree: int
    relay: str
    posterior_dtype: str
    align: str
    align_weight: float
    teacher: str
    teacher_path: str
    teacher_image_size: int
    clip_model: str
    probe: str
    probe_rounds: int
    probe_local_steps: int
    probe_lr: float
    kd_mu: float
    kd_temperature: float
    fmd_server_distill: str
    mosaic_distill_round: int
    mosaic_one_shot: bool
    generator: str
    generator_z_dim: int
    generator_width: int
    generator_steps: int
    generator_batch_size: int
    generator_lr: float
    generator_diversity_weight: float
    generator_diversity_prior: str
    generator_aux_model: str
    generator_aux_steps: int
    prototypes: str
    prototypes_per_class: int
    prototype_min_cluster: int
    prototype_confidence: float
    meta_steps: int
    meta_lr: float
    meta_ema: float
    mosaic_distill_steps: int
    mosaic_distill_lr: float
    samples_per_generator: int
    mosaic_finetune_lr_scale: float
    mosaic_pool_size: int
    prism_generator: str
    prism_loss: str
    prism_tracker_lr: float
    prism_aggregation: str
    prism_downlink: str
    prism_final_mask: str
    prism_dp_epsilon: float
    prism_dp_delta: float
    prism_dp_clip: float
    prism_eval_samples: int
    prism_sample_every: int
    prism_judge_steps: int
    prism_fid: bool
    seed: int
    output_dir: str
    run_name: str
    resume: bool
    data_dir: str
    download: bool

    def as_dict(self) -> dict[str, Any]:
        """Kebab-case view, as written to ``config.yaml``."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    def default_run_name(self) -> str:
        skew = {
            "dirichlet": f"a{self.alpha:g}",
            "pathological": f"k{self.classes_per_client}",
            "shard": f"s{self.shards_per_client}",
            "iid": "iid",
        }[self.partitioner]
        models = self.models.replace(",", "+")
        return f"{self.method}-{self.dataset}-{skew}-{models}-seed{self.seed}"


def load_config(
    run_config: Mapping[str, Any], explicit: Collection[str] | None = None
) -> ExperimentConfig:
    """Resolve and validate; raises :class:`ConfigError` naming the offending key.

    Precedence, lowest first: the defaults, the YAML file named by ``experiment``, then the
    ``explicit`` keys of ``run_config`` (those the user set, even to a value equal to its
    default). ``explicit=None`` means every key of ``run_config`` was set on purpose (a dict
    built in process); the ServerApp passes the keys of Flower's ``Run.override_config``,
    because Flower merges defaults and overrides into ``run_config`` before handing it over.
    """
    unknown = sorted(set(run_config) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown run-config keys {unknown}; allowed: {sorted(DEFAULTS)}")
    chosen = set(run_config) if explicit is None else set(explicit) & set(run_config)
    values = {**DEFAULTS, **run_config}
    experiment = str(values["experiment"])
    if experiment:
        values.update(read_experiment(experiment))
        values["experiment"] = experiment
    values.update({k: run_config[k] for k in chosen})
    return validate(values)


def read_experiment(path_str: str) -> dict[str, Any]:
    """Load a YAML experiment, relative to the working directory or the app directory."""
    path = Path(path_str)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, APP_DIR / path]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise ConfigError(
            f"experiment={path_str!r}: file not found (looked in "
            f"{', '.join(str(c) for c in candidates)})"
        )
    try:
        data = yaml.safe_load(found.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"experiment={path_str!r}: invalid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"experiment={path_str!r}: top level must be a mapping of settings")
    unknown = sorted(set(data) - set(DEFAULTS) - {"experiment"})
    if unknown:
        raise ConfigError(
            f"experiment={path_str!r}: unknown keys {unknown}; allowed: {sorted(DEFAULTS)}"
        )
    if isinstance(data.get("models"), list):  # YAML may list architectures per client
        data["models"] = ",".join(str(m) for m in data["models"])
    data.pop("experiment", None)
    for key, value in data.items():
        # PyYAML (YAML 1.1) reads 1e-5 as a string: accept scientific notation for numbers.
        if isinstance(DEFAULTS[key], float) and isinstance(value, str):
            with contextlib.suppress(ValueError):  # else validate() names the key
                data[key] = float(value)
    return data


def _check_mosaic(out: dict[str, Any]) -> None:
    rounds, event = out["num-server-rounds"], out["mosaic-distill-round"]
    if out["mosaic-one-shot"]:
        if rounds != 1 or event > 1:
            raise ConfigError(
                "mosaic-one-shot=true is a single communication round that ends with the "
                f"distillation: set num-server-rounds=1 (got {rounds}) and leave "
                f"mosaic-distill-round at 0 or 1 (got {event})"
            )
    elif event > rounds:
        raise ConfigError(
            f"mosaic-distill-round={event} is after the last round (num-server-rounds={rounds})"
        )
    if out["prototypes"] == "features" and len(set(parse_assignment(out["models"]))) > 1:
        raise ConfigError(
            "prototypes='features' (penultimate-feature centroids) needs one architecture; "
            "use 'synthetic' or 'auto' with heterogeneous models"
        )


def mosaic_distill_round(cfg: ExperimentConfig) -> int:
    """The event's round: 1 in one-shot mode, else ``mosaic-distill-round`` or the middle."""
    if cfg.mosaic_one_shot:
        return 1
    return cfg.mosaic_distill_round or max(1, cfg.num_server_rounds // 2)


def validate(values: dict[str, Any]) -> ExperimentConfig:
    out: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        value = values[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{key}={value!r} must be true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key}={value!r} must be an integer")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{key}={value!r} must be a number")
            value = float(value)
        elif not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} must be a string")
        out[key] = value
    for key, allowed in CHOICES.items():
        if out[key] not in allowed:
            raise ConfigError(
                f"{key}={out[key]!r} is not allowed; choose one of: {', '.join(allowed)}"
            )
    for key, (low, high, inclusive) in RANGES.items():
        v = out[key]
        too_low = low is not None and (v < low if inclusive else v <= low)
        too_high = high is not None and v > high
        if too_low or too_high:
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            bracket = "[" if inclusive else "("
            raise ConfigError(f"{key}={v!r} is out of range; allowed: {bracket}{lo}, {hi}]")
    try:
        parse_assignment(out["models"])
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if out["local-steps"] == 0 and out["local-epochs"] == 0:
        raise ConfigError("local-steps and local-epochs are both 0; set one of them > 0")
    if out["method"] == "feddf" and out["public-fraction"] == 0:
        raise ConfigError(
            "method='feddf' distils on an unlabelled public split: set "
            "public-fraction in (0, 0.9], e.g. 0.1"
        )
    if out["method"] == "fedh2l" and out["seed-per-class"] == 0 and out["h2l-lambda"] > 0:
        raise ConfigError(
            "seed-per-class=0 (no seed set) requires h2l-lambda=0: there is nothing to distil on"
        )
    if out["seed-source"] == "public" and out["public-fraction"] == 0:
        raise ConfigError(
            "seed-source='public' draws the seed set from the public split: set "
            "public-fraction in (0, 0.9]"
        )
    if out["method"] == "fmd":
        needs_public = out["probe"] == "server" or out["fmd-server-distill"] != "none"
        if needs_public and out["public-fraction"] == 0:
            raise ConfigError(
                "probe='server' and fmd-server-distill need the public split: set "
                "public-fraction in (0, 0.9]"
            )
        if out["teacher"] in ("logits-file", "clip") and not out["teacher-path"]:
            raise ConfigError(f"teacher={out['teacher']!r} needs teacher-path (a local file)")
    if out["method"] == "mosaic":
        _check_mosaic(out)
    if out["prism-dp-epsilon"] > 0 and out["prism-loss"] == "pixel-mmd":
        raise ConfigError(
            "prism-dp-epsilon > 0 privatises the clients' feature statistics; prism-loss="
            "'pixel-mmd' compares raw images every step and has no DP release: use "
            "prism-loss='efficientnet-lite0'"
        )
    if out["topology-degree"] % 2:
        raise ConfigError(f"topology-degree={out['topology-degree']} must be even")
    if out["clients-per-round"] and out["clients-per-round"] < out["min-nodes"]:
        raise ConfigError(
            f"clients-per-round={out['clients-per-round']} is below min-nodes={out['min-nodes']}"
        )
    return ExperimentConfig(**{k.replace("-", "_"): v for k, v in out.items()})
