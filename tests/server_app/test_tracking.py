"""Experiment trackers: what a round row becomes, and the optional W&B and MLflow loggers.

The optional trackers are exercised twice: with recording stand-ins (always, so CI checks the
calls), and with the real packages when they are installed (``pip install "bouquet[wandb]"
"bouquet[mlflow]"``), W&B offline and MLflow on a local SQLite database: nothing leaves the machine.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from server_app.tracking import Trackers, scalars

ROW = {
    "round": 3,
    "accuracy": 0.75,
    "loss": 0.8,
    "per-model": {"cnn-small": {"accuracy": 0.75, "loss": 0.8}, "mlp": {"accuracy": 0.5}},
    "bytes-down": 1000,
    "bytes-up": 900,
    "seconds-round": 1.5,
    "num-ok": 4,
    "dropped": {"17": "no reply"},
}


def test_a_row_becomes_one_curve_per_number():
    assert scalars(ROW, "accuracy") == {
        "score/accuracy": 0.75,
        "score/loss": 0.8,
        "per-model/cnn-small/accuracy": 0.75,
        "per-model/cnn-small/loss": 0.8,
        "per-model/mlp/accuracy": 0.5,
        "round/bytes-down": 1000.0,
        "round/bytes-up": 900.0,
        "round/seconds-round": 1.5,
        "round/num-ok": 4.0,
        "round/num-dropped": 1.0,
    }


class _Recorder(types.ModuleType):
    """A stand-in module that records every call made on it (and on what it returns)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def call(*args, **kwargs):
            self.calls.append((attr, args, kwargs))
            return self  # wandb.init(...) returns the run that is logged to

        return call


def test_wandb_and_mlflow_get_the_config_every_round_and_are_closed(tmp_path, monkeypatch):
    wandb, mlflow = _Recorder("wandb"), _Recorder("mlflow")
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    trackers = Trackers("wandb, mlflow", tmp_path / "run-a", {"method": "fedavg", "seed": 0})
    trackers.log_round(ROW, "accuracy")
    trackers.close()

    assert [c[0] for c in wandb.calls] == ["init", "log", "finish"]
    init = wandb.calls[0][2]
    assert init["name"] == "run-a" and init["config"] == {"method": "fedavg", "seed": 0}
    assert wandb.calls[1][1][0] == scalars(ROW, "accuracy") and wandb.calls[1][2]["step"] == 3

    assert [c[0] for c in mlflow.calls] == ["start_run", "log_params", "log_metrics", "end_run"]
    assert mlflow.calls[0][2] == {"run_name": "run-a"}
    assert mlflow.calls[1][1][0] == {"method": "fedavg", "seed": "0"}
    metrics, step = mlflow.calls[2][1]
    assert step == 3 and metrics["score.accuracy"] == 0.75
    assert metrics["per-model.cnn-small.loss"] == 0.8 and "/" not in "".join(metrics)


def test_images_go_to_tensorboard(tmp_path):
    trackers = Trackers("tensorboard", tmp_path, {})
    trackers.log_images("generator", np.zeros((4, 1, 8, 8), dtype=np.uint8), step=1)
    trackers.close()
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    assert b"samples/generator" in events.read_bytes()


def test_real_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    trackers = Trackers("wandb", tmp_path, {"method": "fedavg"})
    trackers.log_round(ROW, "accuracy")
    trackers.close()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb"))  # the offline run's record, to `wandb sync` later


def test_real_mlflow_on_a_local_database(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    trackers = Trackers("mlflow", tmp_path / "run-b", {"method": "fedavg"})
    trackers.log_round(ROW, "accuracy")
    trackers.close()
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.run_name == "run-b" and run.data.params == {"method": "fedavg"}
    assert run.data.metrics["score.accuracy"] == 0.75
