"""Experiment tracking: every round's metrics, also as TensorBoard event files next to
metrics.jsonl (default), and to Weights & Biases or MLflow when ``trackers`` names them.

metrics.jsonl stays the record; a tracker is a view. The optional ones are imported only when
named (``pip install "bouquet[wandb]"`` / ``"bouquet[mlflow]"``) and are configured by their
own environment (``WANDB_MODE=offline``, ``MLFLOW_TRACKING_URI``): bouquet never sends anything
anywhere by itself.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

TRACKERS = ("tensorboard", "wandb", "mlflow")


def scalars(row: dict[str, Any], metric: str) -> dict[str, float]:
    """The numbers of a metrics.jsonl row worth a curve, by tag."""
    out = {f"score/{metric}": row[metric]}
    if "loss" in row:
        out["score/loss"] = row["loss"]
    for arch, values in row.get("per-model", {}).items():
        for name, value in values.items():
            if isinstance(value, int | float):
                out[f"per-model/{arch}/{name}"] = value
    for key in ("bytes-down", "bytes-up", "seconds-round", "seconds-evaluate", "num-ok"):
        if key in row:
            out[f"round/{key}"] = row[key]
    out["round/num-dropped"] = len(row.get("dropped", {}))
    return {k: float(v) for k, v in out.items()}


class Trackers:
    """The trackers a run asked for; ``log_round`` and ``log_images`` feed all of them."""

    def __init__(self, names: str, run_dir: Path, config: dict[str, Any]) -> None:
        self.names = [n.strip() for n in names.split(",") if n.strip()]  # checked by config
        self._tb = self._wandb = self._mlflow = None
        if "tensorboard" in self.names:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in self.names:
            self._wandb = _optional("wandb").init(
                name=run_dir.name, dir=str(run_dir), config=config, resume="allow"
            )
        if "mlflow" in self.names:
            self._mlflow = _optional("mlflow")
            self._mlflow.start_run(run_name=run_dir.name)
            self._mlflow.log_params({k: str(v)[:500] for k, v in config.items()})

    def log_round(self, row: dict[str, Any], metric: str) -> None:
        values, step = scalars(row, metric), int(row["round"])
        if self._tb is not None:
            for tag, value in values.items():
                self._tb.add_scalar(tag, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(values, step=step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({t.replace("/", "."): v for t, v in values.items()}, step)

    def log_images(self, name: str, images: np.ndarray, step: int) -> None:
        """uint8 images (N, C, H, W), e.g. a generator's samples."""
        if self._tb is not None:
            self._tb.add_images(f"samples/{name}", images, step, dataformats="NCHW")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._mlflow is not None:
            self._mlflow.end_run()


def _optional(module: str) -> Any:
    """An optional tracker's module; config validation (check_trackers) already refused a
    tracker that is not installed, with the pip command that installs it."""
    return importlib.import_module(module)
