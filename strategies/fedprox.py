"""FedProx [Li et al., MLSys 2020, arXiv:1812.06127]: FedAvg whose clients add
(mu/2)||w - w_global||^2 to their local loss; the server side is FedAvg's."""

from __future__ import annotations

from logging import INFO
from typing import Any

import torch
from flwr.supercore import log

from federated_data import Federation
from protocol.settings import Section, Setting

from .fedavg import FedAvg, aggregation_settings

FEDPROX_SETTINGS = Section(
    "fedprox",
    (
        Setting(
            "proximal-mu", 0.01, "strength of the proximal term (mu/2)||w - w_global||^2", low=0.0
        ),
    ),
)


class FedProx(FedAvg):
    """FedAvg with a proximal term sent to clients as ``proximal-mu``.

    Parameters
    ----------
    proximal_mu : float (default: 0.01)
        Strength of the proximal term; 0 reduces to FedAvg.
    """

    name = "fedprox"

    def __init__(self, *, proximal_mu: float = 0.01, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        if proximal_mu < 0:
            raise ValueError(f"proximal-mu must be >= 0, got {proximal_mu}")
        self.proximal_mu = proximal_mu

    def train_config(self, server_round: int) -> dict[str, int | float | str | bool]:
        return {**super().train_config(server_round), "proximal-mu": self.proximal_mu}

    def summary(self) -> None:
        super().summary()
        log(INFO, "\t│   └── proximal mu: %g", self.proximal_mu)


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> FedProx:
    return FedProx(proximal_mu=cfg.proximal_mu, **aggregation_settings(cfg, fed), **common)
