"""Experiment configuration: the schema, YAML experiments, validation before the first round.

Every key is declared once, beside the component that owns it (:mod:`protocol.settings`):
the run's own keys below, the data's in ``federated_data``, local training's in
``models.training``, each method's in its strategy module (collected through
:mod:`server_app.methods`). Defaults, validation, :class:`ExperimentConfig`, the nodes' config
and ``docs/configuration.md`` derive from them.

Precedence, lowest first: the defaults (mirrored in ``pyproject.toml``), then the YAML file
named by ``experiment``, then every value set explicitly (``--run-config``), even one equal to
its default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

from federated_data.federation import DATA_SETTINGS
from models.assignment import MODEL_SETTINGS, parse_assignment
from models.training import TRAINING_SETTINGS
from protocol.settings import ConfigError, Section, Setting, merge_sections

from .methods import METHODS, method_sections

__all__ = ["DEFAULTS", "SCHEMA", "SECTIONS", "ConfigError", "ExperimentConfig", "load_config"]

APP_DIR = Path(__file__).resolve().parent.parent

RUN_SETTINGS = Section(
    "run",
    (
        Setting(
            "experiment", "", "a YAML file of settings (relative to the working or app directory)"
        ),
        Setting("method", "fedavg", "the method (server_app/methods.py)", choices=tuple(METHODS)),
        Setting("num-server-rounds", 8, "communication rounds", low=1),
        Setting("clients-per-round", 0, "nodes sampled per round (0 = all connected)", low=0),
        Setting("min-nodes", 2, "fewest valid replies a round may proceed with", low=1),
        Setting(
            "round-timeout",
            600.0,
            "seconds to wait for one message phase's replies",
            low=0.0,
            low_open=True,
        ),
        Setting(
            "poll-interval",
            0.1,
            "seconds between the ServerApp's first pulls for replies; later in a phase the "
            "wait grows to 5% of the time elapsed, at most 1 s (Flower's own waits 3 s)",
            low=0.0,
            high=60.0,
            low_open=True,
        ),
        Setting(
            "max-reply-mb",
            1024.0,
            "drop a reply larger than this many MiB before decoding its arrays (0 = no bound)",
            low=0.0,
        ),
        Setting("seed", 0, "root of every random choice (data, sampling, initial weights)"),
        Setting(
            "output-dir",
            "outputs",
            "where run directories are created (relative: to "
            "$BOUQUET_OUTPUT_ROOT or the working directory)",
        ),
        Setting(
            "run-name", "", "the run directory's name (default: method-dataset-skew-models-seed)"
        ),
        Setting("resume", False, "continue the latest run of that name from its last checkpoint"),
        Setting(
            "trackers",
            "tensorboard",
            "where per-round metrics also go, comma-separated: tensorboard (event files in the "
            "run directory), wandb, mlflow (their extras; off unless named), or empty for none",
        ),
    ),
)
# Every section, in the order of the configuration reference.
SECTIONS: tuple[Section, ...] = (
    RUN_SETTINGS,
    DATA_SETTINGS,
    MODEL_SETTINGS,
    TRAINING_SETTINGS,
    *method_sections(),
)
SCHEMA: dict[str, Setting] = merge_sections(SECTIONS)
DEFAULTS: dict[str, Any] = {key: s.default for key, s in SCHEMA.items()}


class ExperimentConfig:
    """The resolved, validated settings of one run: attribute = run-config key with ``_``
    (``cfg.num_server_rounds``); read-only."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name.replace("_", "-")]
        except KeyError:
            raise AttributeError(f"no setting {name.replace('_', '-')!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ExperimentConfig is read-only")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExperimentConfig) and self._values == other._values

    def __repr__(self) -> str:
        return f"ExperimentConfig({self._values!r})"

    def as_dict(self) -> dict[str, Any]:
        """Kebab-case view, as written to ``config.yaml``."""
        return dict(self._values)

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


def check_trackers(names: str) -> None:
    """Known names, and the optional trackers installed (before anything is written)."""
    from importlib.util import find_spec

    from .tracking import TRACKERS

    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in TRACKERS:
            raise ConfigError(f"trackers: {name!r} is unknown; choose from {', '.join(TRACKERS)}")
        if name != "tensorboard" and find_spec(name) is None:
            raise ConfigError(
                f'trackers names {name}, which is not installed: pip install "bouquet[{name}]"'
            )


def validate(values: Mapping[str, Any]) -> ExperimentConfig:
    """Types, ranges and choices of every key, then the checks across keys: the generic ones
    here, the method's own (``check_settings`` of its strategy module) after them."""
    out: dict[str, Any] = {key: setting.check(values[key]) for key, setting in SCHEMA.items()}
    try:
        parse_assignment(out["models"])
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if out["local-steps"] == 0 and out["local-epochs"] == 0:
        raise ConfigError("local-steps and local-epochs are both 0; set one of them > 0")
    name = out["run-name"]
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ConfigError(
            f"run-name={name!r} must be a plain directory name: runs stay inside output-dir"
        )
    if out["clients-per-round"] and out["clients-per-round"] < out["min-nodes"]:
        raise ConfigError(
            f"clients-per-round={out['clients-per-round']} is below min-nodes={out['min-nodes']}"
        )
    check_trackers(out["trackers"])
    method = METHODS[out["method"]]
    for check in [s.check for s in method.sections] + [method.check]:
        if check is not None:
            check(out)
    return ExperimentConfig(out)
