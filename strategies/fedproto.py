"""FedProto [Tan et al., AAAI 2022, arXiv:2105.00243]: prototype learning across clients of
different architectures, a low-bandwidth peer of FedH2L.

Each node keeps a private model of its own architecture whose head reads ``proto-width``
features (a projection is added where an architecture's head reads another width:
``models/features.py``). After local training it sends its prototypes, the mean features of its
examples of each class, with the count behind each; the server averages them per class weighted
by those counts (the paper's eq. 6) into global prototypes, sends them to every participant, and
the node adds to its cross-entropy ``proto-lambda`` times the squared distance between each
example's features and its class's global prototype. No weights and no data travel.

Where the paper is silent or we differ (docs/methods/fedproto.md):

* the global prototypes pool every partition's *latest* prototypes (with full participation,
  the paper's round-by-round average);
* the regulariser is scaled as the authors' code scales it (a mean over feature elements);
* each step's gradient is clipped to ``proto-max-grad-norm`` (5, FedH2L's and FD's default;
  0 = the paper): without it 1-2 clients per seed went NaN on Fashion-MNIST at 2 classes per
  client (the peers benchmark);
* each node scores its own model's classifier (test split and a held-out tenth of its data), as
  FD's and FedH2L's do; the paper's nearest-prototype inference is not reported.
"""

from __future__ import annotations

from logging import INFO
from typing import Any

import torch
from flwr.supercore import log

from federated_data import Federation
from protocol import CLASS_PROTOTYPES_KEY, TRAIN_PROTO
from protocol.settings import Section, Setting

from .class_means import ClassMeanRelay

FEDPROTO_SETTINGS = Section(
    "fedproto",
    (
        Setting(
            "proto-lambda",
            1.0,
            "weight of the squared distance between an example's features and its class's "
            "global prototype",
            low=0.0,
            travel="method",
        ),
        Setting(
            "proto-width",
            128,
            "features every client's head reads (a projection is added to architectures whose "
            "head reads another width; cnn-small's reads 128)",
            low=1,
            travel="method",
        ),
        Setting(
            "proto-max-grad-norm",
            5.0,
            "clip each local step's gradient to this global norm (0 = off, the paper's "
            "behaviour); FedH2L's and FD's default: without it clients went NaN at 2 classes "
            "per client (docs/methods/fedproto.md)",
            low=0.0,
            travel="method",
        ),
    ),
)


class FedProto(ClassMeanRelay):
    """Global class prototypes pooled from clients of any architectures.

    Parameters
    ----------
    num_classes : int
    width : int (default: 128)
        ``proto-width``, the features of every client's head.
    weight : float (default: 1.0)
        ``proto-lambda``; at 0 (every node trains alone) no prototypes are sent.
    """

    name = "fedproto"
    message_type = TRAIN_PROTO
    record_key = CLASS_PROTOTYPES_KEY
    array_name = "prototypes"
    leave_one_out = False  # the paper's global prototypes include the receiver's own

    def __init__(self, *, num_classes: int, width: int = 128, **kwargs: Any) -> None:
        super().__init__(num_classes=num_classes, **kwargs)
        self._width = width

    @property
    def width(self) -> int:
        return self._width

    def summary(self) -> None:
        super().summary()
        log(
            INFO,
            "\t│   └── %d x %d class prototypes per node and round",
            self.num_classes,
            self.width,
        )


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> FedProto:
    return FedProto(
        num_classes=fed.num_classes, width=cfg.proto_width, weight=cfg.proto_lambda, **common
    )
