"""FD: federated distillation [Jeong et al., arXiv:1811.11479], a low-bandwidth peer of FedH2L.

Each node keeps a private model of its own architecture. After local training it sends the
mean of its model's logits over its examples of each class (a classes x classes matrix and the
count behind every row); the server relays, to every participant, the mean of the *other*
participants' latest class means (their count-weighted average, so that every example counts
once), and the node adds to its cross-entropy a distillation term pulling its logits on each
example toward that mean for the example's class. No weights and no data travel.

Where the paper is silent or we differ (docs/methods/fd.md):

* the server averages class means weighted by the examples behind them (the paper averages per
  device); a class no peer holds gets no distillation term;
* the distillation term is the temperature-scaled KL of Hinton et al. (``fd-temperature``,
  ``fd-lambda``), as in FedH2L, rather than the paper's unspecified distance;
* each step's gradient is clipped to ``fd-max-grad-norm`` (5, FedH2L's default; 0 = the
  paper): without it a cnn-small client diverged to NaN in round 2 on Fashion-MNIST,
  Dirichlet 0.1 (seeds 1 and 2 of the peers benchmark);
* each node scores its own model (test split and a held-out tenth of its data), as FedH2L's do.
"""

from __future__ import annotations

from logging import INFO
from typing import Any

import torch
from flwr.supercore import log

from federated_data import Federation
from protocol import CLASS_LOGITS_KEY, TRAIN_FD
from protocol.settings import Section, Setting

from .class_means import ClassMeanRelay

FD_SETTINGS = Section(
    "fd",
    (
        Setting(
            "fd-lambda",
            1.0,
            "weight of the KL toward the peers' mean logits of each example's class",
            low=0.0,
            travel="method",
        ),
        Setting(
            "fd-temperature",
            1.0,
            "temperature of that KL",
            low=0.0,
            low_open=True,
            travel="method",
        ),
        Setting(
            "fd-max-grad-norm",
            5.0,
            "clip each local step's gradient to this global norm (0 = off, the paper's "
            "behaviour); FedH2L's default, so that neither peer diverges where the other "
            "would not (docs/methods/fd.md)",
            low=0.0,
            travel="method",
        ),
    ),
)


class FD(ClassMeanRelay):
    """Relay of per-class mean logits between clients of any architectures (leave-one-out).

    Parameters
    ----------
    num_classes : int
    weight : float (default: 1.0)
        ``fd-lambda``, the nodes' distillation weight; at 0 (every node trains alone) no means
        are sent.
    """

    name = "fd"
    message_type = TRAIN_FD
    record_key = CLASS_LOGITS_KEY
    array_name = "logits"
    leave_one_out = True

    @property
    def width(self) -> int:
        return self.num_classes

    def summary(self) -> None:
        super().summary()
        c = self.num_classes
        log(INFO, "\t│   └── %d x %d class-mean logits per node and round", c, c)


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> FD:
    return FD(num_classes=fed.num_classes, weight=cfg.fd_lambda, **common)
