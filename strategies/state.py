"""Explicit, serialisable server state (FedJAX style): checkpoint and resume fall out of it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from federated_data.atomic import save_npz

Arrays = dict[str, np.ndarray]


@dataclass
class ServerState:
    """Everything the server needs to continue a run after ``round``.

    Attributes
    ----------
    round : int
        Last completed round (0 before the first).
    models : dict[str, Arrays]
        One global model per architecture, as named arrays (a PyTorch state dict).
    data : Arrays
        Method-specific arrays (FedH2L: the seed set and the last posteriors).
    extra : dict[str, Any]
        JSON-serialisable, method-specific state.
    """

    round: int = 0
    models: dict[str, Arrays] = field(default_factory=dict)
    data: Arrays = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def data_under(self, prefix: str) -> Arrays:
        """The ``data`` arrays named ``<prefix><name>``, by ``<name>`` (a module kept in the
        state: a generator's state dict under ``"fedgen-generator/"``)."""
        return {k.removeprefix(prefix): v for k, v in self.data.items() if k.startswith(prefix)}

    def put_data_under(self, prefix: str, arrays: Arrays) -> None:
        """Store ``arrays`` as ``data[<prefix><name>]`` (the inverse of :meth:`data_under`)."""
        self.data.update({prefix + k: v for k, v in arrays.items()})

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
        arrays = {f"model/{arch}/{k}": a for arch, ms in self.models.items() for k, a in ms.items()}
        arrays.update({f"data/{k}": a for k, a in self.data.items()})
        meta = {
            "round": self.round,
            "extra": self.extra,
            "models": {arch: list(ms) for arch, ms in self.models.items()},
            "data": list(self.data),
        }
        save_npz(path, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> ServerState:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["__meta__"].tobytes().decode())
            models = {
                arch: {k: z[f"model/{arch}/{k}"] for k in names}
                for arch, names in meta["models"].items()
            }
            data = {k: z[f"data/{k}"] for k in meta["data"]}
        return cls(round=int(meta["round"]), models=models, data=data, extra=meta["extra"])
