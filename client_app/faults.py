"""Deliberately bad nodes, for testing a deployment's defences (never set in production).

A SuperNode started with ``--node-config "... inject-fault='nan'"`` corrupts the weights its
``train`` handler returns, so that a real gRPC federation can show the server dropping and
logging the reply instead of averaging it (tests/test_deployment.py); ``label-flip`` poisons
the node's data instead (every label y becomes classes - 1 - y), a well-formed attack that
only robust aggregation can answer (benchmarks/attacks.py).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

from federated_data import ArrayDataset

ARRAY_FAULTS = ("nan", "wrong-shape")
FAULTS = (*ARRAY_FAULTS, "label-flip")


def check_fault(fault: str) -> None:
    if fault not in FAULTS:
        raise ValueError(f"inject-fault={fault!r} is unknown; allowed: {', '.join(FAULTS)}")


def poison_data(data: ArrayDataset, fault: str, num_classes: int) -> ArrayDataset:
    """The node's data as a ``label-flip`` node trains on it (unchanged for other faults)."""
    check_fault(fault)
    if fault != "label-flip":
        return data
    return ArrayDataset(data.x, (num_classes - 1 - data.y).astype(data.y.dtype))


def inject_fault(arrays: ArrayRecord, fault: str) -> ArrayRecord:
    """``nan``: the first floating-point array becomes NaN; ``wrong-shape``: the first array
    loses its last element. The other arrays are returned as they are."""
    check_fault(fault)
    if fault not in ARRAY_FAULTS:
        return arrays
    out, done = ArrayRecord(), False
    for name, array in arrays.items():
        value = array.numpy()
        if not done and fault == "nan" and np.issubdtype(value.dtype, np.floating):
            value, done = np.full_like(value, np.nan), True
        elif not done and fault == "wrong-shape":
            value, done = value.reshape(-1)[:-1].copy(), True
        out[name] = Array(value)
    return out
