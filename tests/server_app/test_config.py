from pathlib import Path

import pytest
import tomllib

from server_app.config import DEFAULTS, ConfigError, load_config, mosaic_distill_round

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_pyproject():
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
