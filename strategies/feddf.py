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
from protocol.settings import ConfigError, Section, Setting

from .base import RoundReport
from .distillation import EnsembleDistillation
from .fedavg import FedAvg, TrainReply, aggregation_settings
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
    distillation : EnsembleDistillation (default: its defaults, seeded by ``seed``)
        Steps, learning rate, batch size, temperature and device of the distillation.
    **kwargs
        The base strategy's arguments.
    """

    name = "feddf"

    def __init__(  # type: ignore[no-untyped-def]
        self,
        *,
        public_x: np.ndarray,
        distillation: EnsembleDistillation | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if len(public_x) == 0:
            raise ValueError("feddf needs an unlabelled public split here: set public-fraction > 0")
        self.public_x = public_x
        self.distillation = distillation or EnsembleDistillation(seed=self.seed)

    def after_aggregation(
        self,
        grid: Grid,
        state: ServerState,
        replies: dict[int, TrainReply],
        server_round: int,
        report: RoundReport,
    ) -> None:
        targets = self.distillation.mean_logits(self.client_models(replies), self.public_x)
        self.distillation.distill(
            state,
            {self.nodes[n].architecture for n in replies},
            self.load_model,
            self.public_x,
            targets,
            server_round,
            report,
        )
        log(
            INFO,
            "Round %d: distilled %s toward the ensemble of %d client models",
            server_round,
            ", ".join(sorted(state.models)),
            len(replies),
        )

    def summary(self) -> None:
        super().summary()
        log(INFO, "\t│   └── distillation: %s", self.distillation.describe(len(self.public_x)))


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> FedDF:
    distillation = EnsembleDistillation.from_config(cfg, device)
    return FedDF(
        public_x=fed.public.x, distillation=distillation, **aggregation_settings(cfg, fed), **common
    )


def check_settings(values: Mapping[str, Any]) -> None:
    if values["public-fraction"] == 0:
        raise ConfigError(
            "method='feddf' distils on an unlabelled public split: set "
            "public-fraction in (0, 0.9], e.g. 0.1"
        )
