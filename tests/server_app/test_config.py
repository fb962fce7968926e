from pathlib import Path

import pytest
import tomllib

from server_app.config import DEFAULTS, ConfigError, load_config
from strategies.mosaic import distill_round as mosaic_distill_round

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_pyproject():
    """pyproject.toml's table is what Flower reads; the schema is the source it must mirror."""
    app_config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"][
        "config"
    ]
    assert app_config == DEFAULTS


def test_defaults_resolve():
    cfg = load_config(dict(DEFAULTS))
    assert cfg.method == "fedavg" and cfg.alpha == 0.5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"method": "fedsgd"},
            r"method='fedsgd' is not allowed; choose one of: fedavg, fedprox, feddf",
        ),
        (
            {"dataset": "imagenet"},
            r"dataset='imagenet' is not allowed; choose one of: fmnist",
        ),
        ({"models": "cnn-small,vgg"}, r"architecture 'vgg' is unknown; allowed: mlp"),
        ({"alpha": 0.0}, r"alpha=0.0 is out of range; allowed: \(0, inf\]"),
        ({"momentum": 1.5}, r"momentum=1.5 is out of range"),
        ({"num-server-rounds": 0}, r"num-server-rounds=0 is out of range"),
        ({"lr": "fast"}, r"lr='fast' must be a number"),
        ({"method": "feddf"}, r"set public-fraction"),
        ({"local-steps": 0}, r"both 0"),
        ({"colour": 1}, r"unknown run-config keys \['colour'\]"),
        (
            {"method": "mosaic", "mosaic-one-shot": True},
            r"mosaic-one-shot=true is a single communication round.*num-server-rounds=1 \(got 8\)",
        ),
        (
            {"method": "mosaic", "mosaic-distill-round": 9},
            r"mosaic-distill-round=9 is after the last round \(num-server-rounds=8\)",
        ),
        (
            {"method": "mosaic", "models": "heterogeneous", "prototypes": "features"},
            r"prototypes='features' .* needs one architecture",
        ),
        (
            {"method": "mosaic", "mosaic-gate-blends": "0.5"},
            r"mosaic-gate-blends are candidates of the client gate: set mosaic-event-gate=clients",
        ),
        (
            {"method": "mosaic", "mosaic-event-gate": "clients", "mosaic-gate-blends": "0.5,1"},
            r"mosaic-gate-blends: 1 is not in \(0, 1\)",
        ),
        (
            {"method": "mosaic", "mosaic-event-gate": "clients", "mosaic-gate-blends": "half"},
            r"mosaic-gate-blends: 'half' is not a number",
        ),
        ({"generator": "stylegan"}, r"generator='stylegan' is not allowed; choose one of"),
        ({"prototype-confidence": 1.5}, r"prototype-confidence=1.5 is out of range"),
        ({"prism-aggregation": "median"}, r"prism-aggregation='median' is not allowed.*mada"),
        ({"prism-generator": "huge"}, r"prism-generator='huge' is not allowed; choose one of"),
        ({"prism-dp-delta": 1.5}, r"prism-dp-delta=1.5 is out of range"),
        (
            {"method": "prism", "prism-dp-epsilon": 9.8, "prism-loss": "pixel-mmd"},
            r"prism-loss='pixel-mmd' compares raw images every step and has no DP release",
        ),
    ],
)
def test_bad_values_name_the_key_and_allowed_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config({**DEFAULTS, **override})


def test_yaml_experiment_with_list_and_precedence(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("method: fedprox\nmodels: [mlp, cnn-small]\nlr: 0.01\n")
    cfg = load_config({"experiment": str(exp), "lr": 0.2})
    assert cfg.method == "fedprox" and cfg.models == "mlp,cnn-small"
    assert cfg.lr == 0.2  # an explicit --run-config value beats the file


def test_yaml_errors_are_named(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config({"experiment": str(tmp_path / "none.yaml")})
    bad = tmp_path / "bad.yaml"
    bad.write_text("methd: fedavg\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['methd'\]"):
        load_config({"experiment": str(bad)})


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_is_valid(path):
    load_config({"experiment": str(path.relative_to(ROOT))})


def test_mosaic_event_round_defaults_to_the_middle_and_to_1_in_one_shot():
    assert mosaic_distill_round(load_config({**DEFAULTS, "method": "mosaic"})) == 4
    explicit = load_config({**DEFAULTS, "method": "mosaic", "mosaic-distill-round": 7})
    assert mosaic_distill_round(explicit) == 7
    one_shot = {"method": "mosaic", "mosaic-one-shot": True, "num-server-rounds": 1}
    assert mosaic_distill_round(load_config({**DEFAULTS, **one_shot})) == 1


def test_explicit_values_beat_the_experiment_file_even_when_equal_to_the_default(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("method: mosaic\nalpha: 0.1\nlocal-steps: 7\n")
    merged = {**DEFAULTS, "experiment": str(exp), "method": "fedavg", "alpha": 0.3}
    # what the user set: the file, method (to its default) and alpha
    cfg = load_config(merged, explicit={"experiment", "method", "alpha"})
    assert (cfg.method, cfg.alpha, cfg.local_steps) == ("fedavg", 0.3, 7)
    # the same merged dict with only the file set explicitly: the file wins everywhere
    cfg = load_config({**DEFAULTS, "experiment": str(exp)}, explicit={"experiment"})
    assert (cfg.method, cfg.alpha, cfg.local_steps) == ("mosaic", 0.1, 7)
    # a dict built in process: every key in it counts as set
    cfg = load_config({"experiment": str(exp), "method": "fedavg"})
    assert (cfg.method, cfg.alpha) == ("fedavg", 0.1)


def test_the_configuration_reference_is_generated_from_the_schema():
    from server_app.reference import render_reference

    text = (ROOT / "docs" / "configuration.md").read_text()
    assert text == render_reference(), "run: python -m server_app.reference > docs/configuration.md"
    for key in DEFAULTS:
        assert f"| `{key}` |" in text


def test_nan_is_refused_for_every_float_key():
    with pytest.raises(ConfigError, match=r"lr=nan must be a finite number"):
        load_config({"lr": float("nan")})


def test_method_settings_travel_only_to_their_method():
    from federated_data import DataSpec, Federation
    from server_app.runner import node_config

    fed = Federation(DataSpec(dataset="digits", num_partitions=2))
    fedavg = node_config(load_config({"dataset": "digits"}), fed)
    mosaic = node_config(load_config({"dataset": "digits", "method": "mosaic"}), fed)
    prism = node_config(load_config({"dataset": "digits", "method": "prism"}), fed)
    assert "generator-width" not in fedavg and "prism-loss" not in fedavg
    assert mosaic["generator-width"] == 32 and "prism-loss" not in mosaic
    assert prism["prism-loss"] == "efficientnet-lite0" and prism["prism-dp-noise"] == 0.0
    for config in (fedavg, mosaic, prism):  # "all" settings and the data spec go everywhere
        assert config["lr"] == 0.05 and config["data.dataset"] == "digits"
