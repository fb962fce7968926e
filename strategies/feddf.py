"""FedDF: ensemble distillation for robust model fusion [Lin et al., NeurIPS 2020,
arXiv:2006.07242].

Each round: clients train as in FedAvg; clients of the same architecture are averaged within
their group; then every group's average is distilled toward the ensemble of *all* received
client models (mean logits), on an unlabelled public split held by the server. Knowledge thus
crosses architectures, which plain FedAvg cannot do.
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.serverapp import Grid
from flwr.supercore import log

from federated_data import Federation
from models.training import distill, predict_logits, seeded_generator
from protocol.settings import ConfigError, Section, Setting

from .base import RoundReport, module_arrays
from .fedavg import FedAvg, TrainReply
from .state import ServerState

DISTILL_SETTINGS = Section(
    "server-side distillation",
    (
        Setting("distill-steps", 200, "Adam steps per architecture per round", low=0),
        Setting("distill-lr", 0.001, "Adam learning rate", low=0.0, low_open=True),
        Setting("distill-batch-size", 64, "distillation batch size", low=2),
        Setting("distill-temperature", 1.0, "softmax temperature", low=0.0, low_open=True),
    ),
    "FedDF's ensemble distillation on the public split (also FMD's server ablation and "
    "Mosaic's rounds after its event).",
)


class FedDF(FedAvg):
    """FedAvg per architecture group + server-side ensemble distillation.

    Parameters
    ----------
    public_x : np.ndarray
        Unlabelled public images (uint8, NCHW); the distillation data.
    distill_steps : int (default: 200)
        Adam steps per group per round.
    distill_lr : float (default: 1e-3)
    distill_batch_size : int (default: 64)
    temperature : float (default: 1.0)
    device : torch.device | str (default: "cpu")
    """

    name = "feddf"
    uses_public_split = True

    def __init__(  # type: ignore[no-untyped-def]
        self,
        *,
        public_x: np.ndarray,
        distill_steps: int = 200,
        distill_lr: float = 1e-3,
        distill_batch_size: int = 64,
        temperature: float = 1.0,
        device: torch.device | str = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if len(public_x) == 0 and self.uses_public_split:
            raise ValueError(
                f"{self.name} needs an unlabelled public split here: set public-fraction > 0"
            )
        self.public_x = public_x
        self.distill_steps = distill_steps
        self.distill_lr = distill_lr
        self.distill_batch_size = distill_batch_size
        self.temperature = temperature
        self.device = torch.device(device)

    def after_aggregation(
        self,
        grid: Grid,
        state: ServerState,
        replies: dict[int, TrainReply],
        server_round: int,
        report: RoundReport,
    ) -> None:
        teacher = self.distillation_targets(replies)
        for arch in sorted({self.nodes[n].architecture for n in replies}):
            student = self.load_model(arch, state.models[arch])
            loss = distill(
                student,
                self.public_x,
                teacher,
                steps=self.distill_steps,
                batch_size=self.distill_batch_size,
                lr=self.distill_lr,
                temperature=self.temperature,
                gen=seeded_generator(self.seed, server_round, sum(map(ord, arch))),
                device=self.device,
            )
            state.models[arch] = module_arrays(student)
            report.metrics[f"distill-loss/{arch}"] = loss
        log(
            INFO,
            "Round %d: distilled %s toward %s",
            server_round,
            ", ".join(sorted(state.models)),
            self.target_name(replies),
        )

    def distillation_targets(self, replies: dict[int, TrainReply]) -> torch.Tensor:
        """Logits on the public split that the group models are distilled toward."""
        return self.ensemble_logits(replies)

    def target_name(self, replies: dict[int, TrainReply]) -> str:
        return f"the ensemble of {len(replies)} client models"

    def ensemble_logits(self, replies: dict[int, TrainReply]) -> torch.Tensor:
        """Mean eval-mode logits of every received client model on the public split."""
        total: torch.Tensor | None = None
        for node_id in sorted(replies, key=lambda n: self.nodes[n].partition_id):
            model = self.load_model(self.nodes[node_id].architecture, replies[node_id][0])
            logits = predict_logits(model, self.public_x, self.device)
            total = logits if total is None else total + logits
        assert total is not None
        return total / len(replies)

    def summary(self) -> None:
        super().summary()
        log(
            INFO,
            "\t│   └── distillation: %d public images, %d steps, lr %g, T %g",
            len(self.public_x),
            self.distill_steps,
            self.distill_lr,
            self.temperature,
        )


def distillation_settings(cfg: Any, device: torch.device) -> dict[str, Any]:
    """FedDF's keyword arguments from the run config (FMD and Mosaic distil with them too)."""
    return {
        "distill_steps": cfg.distill_steps,
        "distill_lr": cfg.distill_lr,
        "distill_batch_size": cfg.distill_batch_size,
        "temperature": cfg.distill_temperature,
        "device": device,
    }


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> FedDF:
    return FedDF(public_x=fed.public.x, **distillation_settings(cfg, device), **common)


def check_settings(values: Mapping[str, Any]) -> None:
    if values["public-fraction"] == 0:
        raise ConfigError(
            "method='feddf' distils on an unlabelled public split: set "
            "public-fraction in (0, 0.9], e.g. 0.1"
        )
